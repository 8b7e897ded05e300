// One call with one peer over one RTCPeerConnection, speaking the relay protocol
// (docs/protocol.md): offer/answer, trickle ICE, mute status, hold/resume, DTMF, data channel.

const MAX_EARLY_CANDIDATES = 100;
const IN_CALL = new Set(["connected", "held"]);
// How long a media path (ICE, then DTLS) may take before the call ends "failed": on a LAN or
// through TURN it takes a second or two; the browser alone would wait about 30 s.
export const CONNECT_TIMEOUT_MS = 15_000;

// States: new -> calling (we dial) | ringing (we are called) -> connecting -> connected <-> held
// -> ended. Events: "state" {state}, "ringing" (the peer is alerted), "track" {track},
// "mediastatus" {audioMuted, videoMuted}, "data" {payload},
// "ended" {reason, remoteReason, error, cause, connected}. End reasons: hangup, declined,
// remote_hangup (remoteReason: the peer's or the relay's reason), rejected:busy,
// rejected:decline, failed (no media path; cause "ice": the browser's ICE checks failed,
// "timeout": none worked within CONNECT_TIMEOUT_MS), error ({code, message}). `connected`:
// whether media ever flowed.
export class Call extends EventTarget {
  state = "new";
  heldBy = new Set(); // "local", "remote"
  muted = {audio: false, video: false};
  remoteStream = new MediaStream();

  #send;
  #iceServers;
  #offer;
  #pc = null;
  #localStream = null;
  #senders = new Map(); // RTCRtpSender -> the track it sends when not held
  #known; // the relay knows the call: we were offered it, or sent our offer
  #trickling = false; // our candidates are sent once the peer can route them (after the answer)
  #ownCandidates = [];
  #earlyCandidates = []; // the peer's, until we have its description
  #steps = Promise.resolve(); // negotiation steps and incoming messages run one at a time
  #connectedAt = null;
  #endedAt = null;
  #connectTimer = null;

  // send(message) delivers one protocol message to the relay; the call adds call_id and to.
  // offer: the SDP of an incoming call (then the call starts ringing).
  constructor({send, iceServers, peer, id = crypto.randomUUID().replaceAll("-", ""), offer}) {
    super();
    this.#send = send;
    this.#iceServers = iceServers;
    this.peer = peer;
    this.id = id;
    this.#offer = offer ?? null;
    this.#known = Boolean(offer);
    if (offer) this.state = "ringing";
  }

  get isLive() {
    return this.state !== "ended";
  }

  get offersVideo() {
    return hasSection(this.#offer, "video");
  }

  // What we send (null until dialled or accepted).
  get localStream() {
    return this.#localStream;
  }

  get sendsVideo() {
    return Boolean(this.#localStream?.getVideoTracks().length);
  }

  // Seconds since media started to flow (0 before), frozen once ended.
  get duration() {
    if (this.#connectedAt === null) return 0;
    return ((this.#endedAt ?? performance.now()) - this.#connectedAt) / 1000;
  }

  // Place the call, sending the tracks of `stream` (the call owns it and stops it at the end).
  dial(stream) {
    return this.#step(async () => {
      this.#localStream = stream;
      const pc = this.#createPeerConnection();
      this.#addTracks(pc);
      this.#openDataChannel(pc);
      await pc.setLocalDescription();
      if (!this.isLive) return;
      this.#known = true;
      this.#signal({type: "call_offer", sdp: pc.localDescription.sdp, metadata: {}});
      this.#setState("calling");
    });
  }

  // Answer a ringing call, sending the tracks of `stream` (owned by the call from now on).
  accept(stream) {
    return this.#step(async () => {
      if (this.state !== "ringing") {
        stopTracks(stream);
        return;
      }
      this.#localStream = stream;
      const pc = this.#createPeerConnection();
      await pc.setRemoteDescription({type: "offer", sdp: this.#offer});
      await this.#applyEarlyCandidates();
      this.#addTracks(pc);
      if (hasSection(this.#offer, "application")) this.#openDataChannel(pc);
      await pc.setLocalDescription();
      if (!this.isLive) return; // declined, or hung up by the caller, meanwhile
      this.#setState("connecting");
      this.#signal({type: "call_answer", sdp: pc.localDescription.sdp});
      this.#startTrickle();
    });
  }

  // Tell the caller that the user is being alerted.
  ring() {
    if (this.state === "ringing") this.#signal({type: "call_ringing"});
  }

  // Refuse a ringing call: "decline" (the user said no) or "busy" (in another call).
  decline(reason = "decline") {
    if (this.state !== "ringing") return;
    this.#signal({type: "call_reject", reason});
    this.#end("declined");
  }

  hangup() {
    this.#end("hangup", {notify: "hangup"});
  }

  // Apply one message the relay delivered for this call.
  handle(message) {
    return this.#step(() => this.#apply(message));
  }

  // Muted audio is silence and muted video black frames (track.enabled); the peer is told.
  setMuted(kind, muted) {
    if (!this.isLive || !this.#localStream) return;
    for (const track of this.#localStream.getTracks()) {
      if (track.kind === kind) track.enabled = !muted;
    }
    this.muted[kind] = muted;
    this.#signal({type: "mediastatus", audio_muted: this.muted.audio,
      video_muted: this.sendsVideo && this.muted.video});
  }

  hold() {
    if (!IN_CALL.has(this.state) || this.heldBy.has("local")) return;
    this.#signal({type: "hold"});
    this.#setHeld("local", true);
  }

  resume() {
    if (!this.heldBy.has("local")) return;
    this.#signal({type: "resume"});
    this.#setHeld("local", false);
  }

  // Send DTMF tones as RTP telephone-events; false if the peer did not negotiate them.
  sendTones(tones) {
    const audio = [...this.#senders].find(([, track]) => track.kind === "audio");
    const dtmf = audio?.[0].dtmf;
    if (!IN_CALL.has(this.state) || !dtmf?.canInsertDTMF) return false;
    dtmf.insertDTMF(tones, 100, 70);
    return true;
  }

  getStats() {
    return this.#pc ? this.#pc.getStats() : Promise.resolve(new Map());
  }

  // -- internals ---------------------------------------------------------------------------

  async #apply(message) {
    if (!this.isLive) return;
    switch (message.type) {
      case "call_ringing":
        if (this.state === "calling") this.#emit("ringing");
        break;
      case "call_answer":
        await this.#answered(message.sdp);
        break;
      case "ice":
        await this.#addRemoteCandidate(message.candidate);
        break;
      case "call_reject":
        this.#end(message.reason === "busy" ? "rejected:busy" : "rejected:decline");
        break;
      case "hangup":
        this.#end("remote_hangup", {remoteReason: message.reason});
        break;
      case "mediastatus":
        this.#emit("mediastatus", {audioMuted: Boolean(message.audio_muted),
          videoMuted: Boolean(message.video_muted)});
        break;
      case "hold":
      case "resume":
        if (IN_CALL.has(this.state)) this.#setHeld("remote", message.type === "hold");
        break;
      case "error":
        this.#end("error", {error: {code: message.code, message: message.message}});
        break;
      default: // renegotiate and future types: not supported, ignored
    }
  }

  async #answered(sdp) {
    if (this.state !== "calling") return;
    this.#setState("connecting");
    await this.#pc.setRemoteDescription({type: "answer", sdp});
    if (!this.isLive) return;
    this.#startTrickle();
    await this.#applyEarlyCandidates();
  }

  #createPeerConnection() {
    const pc = new RTCPeerConnection({iceServers: this.#iceServers});
    this.#pc = pc;
    pc.onicecandidate = ({candidate}) => this.#candidateGathered(candidate?.toJSON() ?? null);
    pc.ontrack = ({track}) => {
      this.remoteStream.addTrack(track);
      this.#emit("track", {track});
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected" && this.state === "connecting") {
        this.#connectedAt = performance.now();
        this.#setState("connected");
      } else if (pc.connectionState === "failed" && this.isLive) {
        this.#end("failed", {cause: "ice", notify: "failed"});
      }
    };
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === "failed" && this.isLive) {
        this.#end("failed", {cause: "ice", notify: "failed"});
      }
    };
    return pc;
  }

  #addTracks(pc) {
    for (const track of this.#localStream.getTracks()) {
      this.#senders.set(pc.addTrack(track, this.#localStream), track);
    }
  }

  // The pre-negotiated channel every callbot call has (docs/protocol.md, section 11).
  #openDataChannel(pc) {
    const channel = pc.createDataChannel("callbot", {negotiated: true, id: 0});
    channel.onmessage = ({data}) => this.#emit("data", {payload: data});
  }

  #candidateGathered(candidate) {
    if (this.#trickling) this.#signal({type: "ice", candidate});
    else this.#ownCandidates.push(candidate);
  }

  #startTrickle() {
    this.#trickling = true;
    for (const candidate of this.#ownCandidates.splice(0)) this.#signal({type: "ice", candidate});
  }

  async #addRemoteCandidate(candidate) {
    if (!this.#pc?.remoteDescription) {
      if (this.#earlyCandidates.length < MAX_EARLY_CANDIDATES) this.#earlyCandidates.push(candidate);
      return;
    }
    try {
      if (candidate?.candidate) {
        const line = candidate.candidate.startsWith("candidate:")
          ? candidate.candidate : `candidate:${candidate.candidate}`;
        await this.#pc.addIceCandidate({...candidate, candidate: line});
      } else {
        await this.#pc.addIceCandidate(); // end of candidates
      }
    } catch (error) { // a bad candidate is the peer's problem, not a reason to end the call
      console.warn(`call ${this.id}: ignoring ICE candidate`, candidate, error);
    }
  }

  async #applyEarlyCandidates() {
    for (const candidate of this.#earlyCandidates.splice(0)) {
      await this.#addRemoteCandidate(candidate);
    }
  }

  // Held by anyone: send nothing (no RTP at all) until both sides have resumed.
  #setHeld(by, held) {
    if (held) this.heldBy.add(by);
    else this.heldBy.delete(by);
    const sending = this.heldBy.size === 0;
    for (const [sender, track] of this.#senders) {
      sender.replaceTrack(sending ? track : null).catch((error) => {
        console.warn(`call ${this.id}: could not switch a track`, error);
      });
    }
    this.#setState(sending ? "connected" : "held");
  }

  #step(work) {
    const run = this.#steps.then(work).catch((error) => {
      const failure = {code: "negotiation_failed", message: String(error)};
      this.#end("error", {error: failure, notify: "failed"});
    });
    this.#steps = run;
    return run;
  }

  #signal(message) {
    this.#send({...message, call_id: this.id, to: this.peer});
  }

  #setState(state) {
    if (state === this.state) return;
    this.state = state;
    clearTimeout(this.#connectTimer);
    if (state === "connecting") {
      this.#connectTimer = setTimeout(
        () => this.#end("failed", {cause: "timeout", notify: "failed"}), CONNECT_TIMEOUT_MS);
    }
    this.#emit("state", {state});
  }

  // notify: the hangup reason to send the peer, if the relay knows the call.
  #end(reason, {remoteReason = null, error = null, cause = null, notify = null} = {}) {
    if (!this.isLive) return;
    if (notify && this.#known) this.#signal({type: "hangup", reason: notify});
    this.#endedAt = performance.now();
    this.#setState("ended");
    this.#pc?.close();
    stopTracks(this.#localStream);
    this.#emit("ended", {reason, remoteReason, error, cause, connected: this.#connectedAt !== null});
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, {detail}));
  }
}

function hasSection(sdp, kind) {
  return Boolean(sdp) && `\n${sdp}`.includes(`\nm=${kind} `);
}

function stopTracks(stream) {
  for (const track of stream?.getTracks() ?? []) track.stop();
}
