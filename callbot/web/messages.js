// What the relay, the browser and the peer report, in words for the person using the page.

import {CONNECT_TIMEOUT_MS} from "./call.js";

const NEW_TOKEN = "Get a new one with: callbot token create YOUR-NAME";

const ERRORS = {
  auth_failed: () => `The relay refused the token. Check that it was pasted whole. ${NEW_TOKEN}`,
  auth_expired: () => `The token has expired. ${NEW_TOKEN}`,
  session_revoked: () => `The token was revoked. ${NEW_TOKEN}`,
  session_limit: () => "Too many open sessions for this user. Close another tab or device.",
  invalid_message: () => "The relay refused a message from this page.",
  user_offline: (peer) => `${peer} is not online.`,
  call_not_found: () => "The relay no longer knows this call.",
  rate_limited: () => "Too many messages at once: the relay dropped one.",
  call_failed: () => "The call could not be placed.",
  internal_error: () => "The relay failed on a message from this page (a relay bug).",
  negotiation_failed: () => "The browser could not set up the call.",
};

// How the peer (or the relay, on its behalf) ended the call: the hangup message's reason.
const HANGUPS = {
  hangup: (peer) => `${peer} hung up.`,
  no_answer: (peer) => `No answer from ${peer}.`,
  unavailable: (peer) => `${peer} became unreachable.`,
  answered_elsewhere: () => "Answered on another of your devices.",
  cancelled: () => "Dismissed on another of your devices.",
  declined_elsewhere: () => "Declined on another of your devices.",
  ended: () => "The call ended while this page was offline.",
  failed: (peer) => `${peer} lost the connection.`,
  error: (peer) => `${peer} ran into an error and ended the call.`,
  revoked: () => "The call ended: the tokens of one of its parties were revoked.",
};

const MEDIA_ERRORS = {
  NotAllowedError: "Access to the microphone or camera was refused. Allow it in the "
    + "browser's settings for this site, then try again.",
  NotFoundError: "No microphone or camera was found.",
  NotReadableError: "The microphone or camera is in use by another application, or failed.",
  OverconstrainedError: "The microphone or camera cannot provide what the call needs.",
  InsecureContextError: "The browser gives this page no microphone or camera because it is "
    + "not a secure context: open it as http://127.0.0.1:PORT or http://localhost:PORT on "
    + "the relay's machine, or serve it over HTTPS.",
};

export const DTMF_UNSUPPORTED = "Keypad tones cannot be sent in this call: the other side "
  + "did not accept DTMF (telephone-event).";

// A relay error ({code, message}) in words, its code and detail kept for reference.
export function describeError({code, message}, peer = "The other party") {
  const words = ERRORS[code]?.(peer) ?? "The relay reported an error.";
  const detail = message?.replace(`${code}: `, "");
  return `${words} (${code}${detail ? `: ${detail}` : ""})`;
}

// Why no media path to the peer could be made: the browser's ICE checks failed, none
// worked in time, or the peer gave up first (it sends "failed" before media ever flowed).
const NO_MEDIA_PATH = {
  ice: "the network checks (ICE) failed. A firewall may block UDP, or a TURN server is needed.",
  timeout: `no network route (ICE) worked within ${CONNECT_TIMEOUT_MS / 1000} s.`,
  remote: "their network checks (ICE) failed.",
};

// Why a call ended, from Call's "ended" event.
export function describeEnd({reason, remoteReason, error, cause, connected}, peer) {
  const noPath = (why) => `No media path to ${peer}: ${NO_MEDIA_PATH[why] ?? NO_MEDIA_PATH.ice}`;
  switch (reason) {
    case "hangup": return "You hung up.";
    case "declined": return `You did not take the call from ${peer}.`;
    case "rejected:busy": return `${peer} is busy.`;
    case "rejected:decline": return `${peer} declined the call.`;
    case "failed": return noPath(cause);
    case "error": return describeError(error, peer);
    default:
      if (remoteReason === "failed" && !connected) return noPath("remote");
      return HANGUPS[remoteReason]?.(peer) ?? `${peer} ended the call (${remoteReason}).`;
  }
}

export function describeMediaError(error) {
  return MEDIA_ERRORS[error.name]
    ?? `Could not start the microphone or camera: ${error.message || error.name}`;
}

export function describeConnection({state, delay}, user) {
  switch (state) {
    case "online": return `Signed in as ${user}`;
    case "connecting": return "Connecting to the relay…";
    default: return `Connection to the relay lost: retrying in ${delay.toFixed(1)} s…`;
  }
}

// The call's state in words; `alerting`: the callee's device is ringing.
export function describeCall(call, alerting) {
  switch (call.state) {
    case "calling": return alerting ? `Ringing at ${call.peer}…` : `Calling ${call.peer}…`;
    case "ringing": return `${call.peer} is calling`;
    case "connecting": return "Connecting…";
    case "connected": return "Connected";
    case "held":
      if (!call.heldBy.has("local")) return `On hold: ${call.peer} put the call on hold`;
      return call.heldBy.has("remote") ? "On hold (by both of you)" : "On hold";
    default: return "Call ended";
  }
}

export function describePeerMedia(peer, {audioMuted, videoMuted}) {
  const off = [audioMuted && "microphone", videoMuted && "camera"].filter(Boolean);
  return off.length ? `${peer} turned off their ${off.join(" and ")}.` : "";
}
