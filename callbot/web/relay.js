// The connection to the callbot relay (docs/protocol.md, sections 2 and 12): hello/welcome,
// reconnection with backoff that re-claims calls in progress, and buffering while offline.

const FATAL_CLOSE_CODES = {4001: "auth_failed", 4002: "auth_expired", 4003: "session_revoked",
  4004: "session_limit", 4005: "forbidden"};
const MAX_BUFFERED = 1000;
const FIRST_RETRY = 0.25; // seconds, doubling up to MAX_RETRY, each wait randomised x0.5-1.5
const MAX_RETRY = 10;

// Events: "status" {state: "connecting" | "online" | "reconnecting", delay?},
// "welcome" (the welcome message), "message" (any other relay message, fatal errors aside),
// "fatal" {code, message}: the relay refused us for good (the session is over).
export class RelaySession extends EventTarget {
  user = null;
  iceServers = [];

  #url;
  #token;
  #claims;
  #socket = null;
  #ready = false;
  #buffered = [];
  #retry = FIRST_RETRY;
  #timer = null;
  #fatal = null;
  #stopped = false;

  // claims() lists the calls to re-claim on every hello: [{call_id, peer}].
  constructor(url, token, claims) {
    super();
    this.#url = url;
    this.#token = token;
    this.#claims = claims;
  }

  start() {
    this.#connect();
  }

  // Sends now, or right after the next welcome while offline (the oldest are dropped past 1000).
  send(message) {
    const frame = JSON.stringify({...message, v: 1});
    if (this.#ready) {
      this.#socket.send(frame);
      return;
    }
    if (this.#buffered.length >= MAX_BUFFERED) this.#buffered.shift();
    this.#buffered.push(frame);
  }

  close() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#socket?.close(1000);
  }

  #connect() {
    this.#emit("status", {state: "connecting"});
    const socket = new WebSocket(this.#url);
    this.#socket = socket;
    socket.onopen = () => socket.send(JSON.stringify({
      type: "hello", token: this.#token, role: "user", calls: this.#claims(),
      client: "callbot-softphone", v: 1,
    }));
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onclose = (event) => this.#closed(event);
  }

  #receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // the relay only sends JSON; ignore anything else
    }
    if (message.type === "welcome") {
      this.#ready = true;
      this.#retry = FIRST_RETRY;
      this.user = message.user;
      this.iceServers = message.ice_servers ?? [];
      for (const frame of this.#buffered.splice(0)) this.#socket.send(frame);
      this.#emit("status", {state: "online"});
      this.#emit("welcome", message);
    } else if (message.type === "error" && message.fatal) {
      this.#fatal = message; // reported when the relay closes the connection, right after
    } else {
      this.#emit("message", message);
    }
  }

  #closed(event) {
    this.#ready = false;
    if (this.#stopped) return;
    const code = this.#fatal?.code ?? FATAL_CLOSE_CODES[event.code];
    if (code) {
      this.#stopped = true;
      this.#emit("fatal", {code, message: this.#fatal?.message ?? event.reason});
      return;
    }
    const delay = this.#retry * (0.5 + Math.random());
    this.#retry = Math.min(this.#retry * 2, MAX_RETRY);
    this.#emit("status", {state: "reconnecting", delay});
    this.#timer = setTimeout(() => this.#connect(), delay * 1000);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, {detail}));
  }
}
