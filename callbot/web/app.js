// The softphone page: sign in, dial or answer, and show one call at a time.

import {Call} from "./call.js";
import {openLocalMedia} from "./media.js";
import {
  DTMF_UNSUPPORTED, describeCall, describeConnection, describeEnd, describeError,
  describeMediaError, describePeerMedia,
} from "./messages.js";
import {LevelMeter} from "./meter.js";
import {RelaySession} from "./relay.js";
import {formatStats, summariseStats} from "./stats.js";

const TOKEN_KEY = "callbot-token";
const MAX_NOTICES = 5;
const $ = (id) => document.getElementById(id);
const ui = {
  presence: $("presence"), signOut: $("sign-out"), notices: $("notices"),
  signIn: $("sign-in"), token: $("token"),
  dial: $("dial"), peer: $("peer"), voiceProcessing: $("voice-processing"),
  incoming: $("incoming"), incomingDetail: $("incoming-detail"),
  answer: $("answer"), answerAudio: $("answer-audio"), decline: $("decline"),
  call: $("call"), callPeer: $("call-peer"), callStatus: $("call-status"),
  duration: $("call-duration"), peerNote: $("peer-note"),
  videos: $("videos"), remoteVideo: $("remote-video"), localVideo: $("local-video"),
  micLevel: $("mic-level"), peerLevel: $("peer-level"),
  muteAudio: $("mute-audio"), muteVideo: $("mute-video"), hold: $("hold"),
  keypadToggle: $("keypad-toggle"), keypad: $("keypad"), tonesSent: $("tones-sent"),
  hangup: $("hangup"),
  stats: {
    rtt: $("stat-rtt"), jitter: $("stat-jitter"), loss: $("stat-loss"),
    audioPackets: $("stat-audio-packets"), videoFrames: $("stat-video-frames"),
    packetsSent: $("stat-packets-sent"),
  },
};

let session = null; // RelaySession while signed in
let call = null; // the call on screen: ringing here, or in progress
let alerting = false; // our outgoing call rings at the peer
let meters = [];
let ticker = null;

// -- messages and sign-in ----------------------------------------------------------------

function notify(text) {
  const item = document.createElement("p");
  item.textContent = text;
  ui.notices.prepend(item);
  while (ui.notices.children.length > MAX_NOTICES) ui.notices.lastElementChild.remove();
}

function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  session = new RelaySession(`${scheme}://${location.host}/ws`, token,
    () => (call?.isLive ? [{call_id: call.id, peer: call.peer}] : []));
  session.addEventListener("status", ({detail}) => {
    ui.presence.textContent = describeConnection(detail, session.user);
  });
  session.addEventListener("welcome", () => {
    const first = ui.dial.hidden && !call;
    render();
    if (first) ui.peer.focus();
  });
  session.addEventListener("message", ({detail}) => received(detail));
  session.addEventListener("fatal", ({detail}) => {
    notify(describeError(detail));
    signOut();
  });
  session.start();
  render();
}

function signOut() {
  call?.hangup();
  session?.close();
  session = null;
  sessionStorage.removeItem(TOKEN_KEY);
  ui.presence.textContent = "Signed out";
  render();
  ui.token.focus();
}

function received(message) {
  if (message.type === "call_offer") {
    offered(message);
  } else if (call && message.call_id === call.id) {
    call.handle(message);
  } else if (message.type === "error") {
    notify(describeError(message));
  }
}

// -- placing and taking calls --------------------------------------------------------------

async function dial(peer, video) {
  ui.dial.inert = true; // one call at a time, even while the microphone starts
  let stream;
  try {
    stream = await openLocalMedia({video, voiceProcessing: ui.voiceProcessing.checked});
  } catch (error) {
    notify(describeMediaError(error));
    ui.peer.focus();
    return;
  } finally {
    ui.dial.inert = false;
  }
  show(new Call({send: (m) => session.send(m), iceServers: session.iceServers, peer}));
  await call.dial(stream);
}

function offered(offer) {
  const incoming = new Call({send: (m) => session.send(m), iceServers: session.iceServers,
    peer: offer.from, id: offer.call_id, offer: offer.sdp});
  if (call?.isLive) {
    incoming.decline("busy");
    notify(`Missed a call from ${offer.from}: you were in another call.`);
    return;
  }
  show(incoming);
  incoming.ring();
  ui.incomingDetail.textContent = `${incoming.peer} is calling you`
    + (incoming.offersVideo ? " with video." : ".");
  ui.answer.disabled = ui.answerAudio.disabled = false;
  ui.answerAudio.hidden = !incoming.offersVideo;
  ui.answer.focus();
}

async function answer(video) {
  const incoming = call;
  ui.answer.disabled = ui.answerAudio.disabled = true;
  let stream;
  try {
    stream = await openLocalMedia({video, voiceProcessing: ui.voiceProcessing.checked});
  } catch (error) {
    notify(describeMediaError(error));
    incoming.decline();
    return;
  }
  await incoming.accept(stream);
}

// -- the call on screen --------------------------------------------------------------------

function show(newCall) {
  call = newCall;
  alerting = false;
  ui.notices.replaceChildren(); // what ended earlier calls is stale now
  ui.callPeer.textContent = call.peer;
  ui.peerNote.textContent = ui.tonesSent.textContent = "";
  ui.duration.textContent = formatDuration(0);
  for (const element of Object.values(ui.stats)) element.textContent = "–";
  call.addEventListener("state", () => stateChanged(newCall));
  call.addEventListener("ringing", () => {
    alerting = true;
    render();
  });
  call.addEventListener("track", ({detail}) => {
    // (re)load: a media element does not take up tracks added to a stream it already loaded
    ui.remoteVideo.srcObject = newCall.remoteStream;
    if (detail.track.kind === "audio") meters.push(new LevelMeter(newCall.remoteStream, ui.peerLevel));
    render();
  });
  call.addEventListener("mediastatus", ({detail}) => {
    ui.peerNote.textContent = describePeerMedia(newCall.peer, detail);
  });
  call.addEventListener("data", ({detail}) => {
    const text = typeof detail.payload === "string" ? detail.payload : "(binary data)";
    ui.peerNote.textContent = `${newCall.peer} sent: ${text}`;
  });
  call.addEventListener("ended", ({detail}) => ended(newCall, detail));
  render();
}

function stateChanged(changed) {
  if (changed !== call) return;
  render();
  if (!ticker && changed.localStream && changed.isLive) started(changed);
}

// Our media flows from now on (dialled, or answered): meters, duration, stats.
function started(active) {
  const stream = active.localStream;
  if (stream.getAudioTracks().length) meters.push(new LevelMeter(stream, ui.micLevel));
  ui.localVideo.srcObject = active.sendsVideo ? stream : null;
  ticker = setInterval(() => tick(active), 1000);
  ui.hangup.focus();
}

async function tick(active) {
  ui.duration.textContent = formatDuration(active.duration);
  const shown = formatStats(summariseStats(await active.getStats()));
  for (const [key, element] of Object.entries(ui.stats)) element.textContent = shown[key];
}

function ended(done, detail) {
  if (done !== call) return;
  clearInterval(ticker);
  ticker = null;
  for (const meter of meters) meter.stop();
  meters = [];
  ui.remoteVideo.srcObject = ui.localVideo.srcObject = null;
  const after = done.duration ? ` (${formatDuration(done.duration)})` : "";
  notify(`Call with ${done.peer} ended: ${describeEnd(detail, done.peer)}${after}`);
  call = null;
  render();
  if (!ui.dial.hidden) ui.peer.focus();
}

// -- rendering -----------------------------------------------------------------------------

function render() {
  const online = Boolean(session?.user);
  const ringingHere = call?.state === "ringing";
  const inCall = Boolean(call) && !ringingHere;
  ui.signIn.hidden = session !== null;
  ui.signOut.hidden = session === null;
  ui.dial.hidden = !online || Boolean(call);
  ui.incoming.hidden = !ringingHere;
  ui.call.hidden = !inCall;
  if (!inCall) return;
  const held = call.heldBy.size > 0;
  ui.callStatus.textContent = describeCall(call, alerting);
  ui.remoteVideo.muted = held;
  ui.videos.classList.toggle("no-remote-video", call.remoteStream.getVideoTracks().length === 0);
  ui.videos.classList.toggle("no-local-video", !call.sendsVideo);
  const inProgress = call.state === "connected" || call.state === "held";
  setPressed(ui.muteAudio, call.muted.audio, !call.localStream);
  setPressed(ui.muteVideo, call.muted.video, !call.sendsVideo);
  setPressed(ui.hold, call.heldBy.has("local"), !inProgress);
  ui.keypadToggle.disabled = !inProgress;
}

function setPressed(button, pressed, disabled) {
  button.setAttribute("aria-pressed", String(pressed));
  button.disabled = disabled;
}

function formatDuration(seconds) {
  const whole = Math.floor(seconds);
  const minutes = Math.floor(whole / 60);
  const hours = Math.floor(minutes / 60);
  const mmss = `${minutes % 60}:${String(whole % 60).padStart(2, "0")}`;
  return hours ? `${hours}:${mmss.padStart(5, "0")}` : mmss;
}

// -- controls ------------------------------------------------------------------------------

ui.signIn.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = ui.token.value.trim();
  ui.token.value = "";
  signIn(token);
});
ui.signOut.addEventListener("click", signOut);
ui.dial.addEventListener("submit", (event) => {
  event.preventDefault();
  dial(ui.peer.value.trim(), event.submitter?.value === "video");
});
ui.answer.addEventListener("click", () => answer(call.offersVideo));
ui.answerAudio.addEventListener("click", () => answer(false));
ui.decline.addEventListener("click", () => call.decline());
ui.hangup.addEventListener("click", () => call.hangup());
ui.muteAudio.addEventListener("click", () => {
  call.setMuted("audio", !call.muted.audio);
  render();
});
ui.muteVideo.addEventListener("click", () => {
  call.setMuted("video", !call.muted.video);
  render();
});
ui.hold.addEventListener("click", () => (call.heldBy.has("local") ? call.resume() : call.hold()));
ui.keypadToggle.addEventListener("click", () => {
  ui.keypad.hidden = !ui.keypad.hidden;
  ui.keypadToggle.setAttribute("aria-expanded", String(!ui.keypad.hidden));
});
ui.keypad.addEventListener("click", (event) => {
  const tone = event.target.closest("[data-tone]")?.dataset.tone;
  if (!tone) return;
  if (call.sendTones(tone)) ui.tonesSent.textContent += tone;
  else notify(DTMF_UNSUPPORTED);
});
addEventListener("pagehide", () => (call?.state === "ringing" ? call.decline() : call?.hangup()));

// -- start ---------------------------------------------------------------------------------

// A token in the link (#token=...) signs in, then leaves the address bar.
function tokenFromLink() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) history.replaceState(null, "", location.pathname + location.search);
  return token;
}

addEventListener("hashchange", () => {
  const token = tokenFromLink();
  if (!token) return;
  if (session) signOut();
  signIn(token);
});
if (!window.isSecureContext) notify(describeMediaError({name: "InsecureContextError"}));
const token = tokenFromLink() || sessionStorage.getItem(TOKEN_KEY);
if (token) {
  signIn(token);
} else {
  render();
  ui.token.focus();
}
