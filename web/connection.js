// One WebRTC session with the agent, reconnecting on its own when the link drops.
//
// The microphone stream is owned by the caller and outlives reconnects. Events from the
// server's "events" data channel are handed to `onEvent`; the link's life is reported
// through `onStatus({phase, message, retryInS})` with phase one of:
//   connecting, connected, reconnecting, failed, ended (the server closed the session for
//   good, e.g. after a long silence), idle.
//
// With an access token (the page's ?token=), every request carries
// `Authorization: Bearer TOKEN`. The ICE servers (STUN/TURN) come from GET /config.

const PING_INTERVAL_MS = 1000; // the server closes a session that is silent for 10 s
const ICE_GATHER_TIMEOUT_MS = 5000;
const DISCONNECTED_GRACE_MS = 4000; // ICE "disconnected" often recovers on its own
const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000];
const MAX_ATTEMPTS = 8;
// The browser's receive jitter buffer: as short as it will go (Chromium adapts above it when
// the network jitters). Loopback and a LAN play cleanly at this; the bench and the browser
// tests count concealed samples so that a lower figure is never bought with broken audio.
const JITTER_BUFFER_TARGET_MS = 0;

/** An error the server gave us on purpose: `retryable` says whether trying again helps. */
export class ServerError extends Error {
  constructor(message, { status = 0, retryable = false, retryAfterS = null } = {}) {
    super(message);
    this.name = "ServerError";
    this.status = status;
    this.retryable = retryable;
    this.retryAfterS = retryAfterS;
  }
}

function waitForIceGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    // Send what we have if gathering hangs: host candidates are enough on a LAN.
    const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function authHeaders(token, headers = {}) {
  return token ? { ...headers, Authorization: `Bearer ${token}` } : headers;
}

/** fetch() and its JSON body; a ServerError for anything but a 2xx answer. */
async function requestJson(url, init) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ServerError("The server is unreachable.", { retryable: true });
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.ok && body) return body;
  throw errorFor(response, body);
}

function errorFor(response, body) {
  const status = response.status;
  const reason = (body && body.error) || response.statusText || `HTTP ${status}`;
  if (status === 503 || status === 429) {
    const retryAfterS = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    const what = status === 503 ? "The server is full" : "Too many connections from here";
    return new ServerError(`${what}: ${reason}`, {
      status,
      retryable: true,
      retryAfterS: Number.isFinite(retryAfterS) && retryAfterS > 0 ? retryAfterS : 5,
    });
  }
  if (status === 401) {
    return new ServerError(
      "This server needs an access token: open the full link you were given, the one that ends in ?token=…",
      { status },
    );
  }
  if (status === 403) {
    return new ServerError(`The server refused this page: ${reason}`, { status });
  }
  if (status === 400 || status === 413) {
    return new ServerError(`The server refused the connection: ${reason}`, { status });
  }
  return new ServerError(`The server failed (${status}): ${reason}`, {
    status,
    retryable: status >= 500,
  });
}

/** The STUN/TURN servers the server was configured with (none on a LAN). */
async function fetchIceServers(token, signal) {
  const body = await requestJson("/config", { headers: authHeaders(token), cache: "no-store", signal });
  return Array.isArray(body.iceServers) ? body.iceServers : [];
}

async function postOffer(description, token, signal) {
  const body = await requestJson("/offer", {
    method: "POST",
    headers: authHeaders(token, { "Content-Type": "application/json" }),
    body: JSON.stringify({ sdp: description.sdp, type: description.type }),
    signal,
  });
  if (body.sdp && body.session_id) return body;
  throw new ServerError("The server sent an answer without a session.", { retryable: true });
}

export class AgentConnection {
  /**
   * @param {MediaStream} micStream  the user's microphone
   * @param {HTMLAudioElement} audioElement  plays the agent through the WebRTC track
   * @param {{onEvent: (e: object) => void, onStatus: (s: object) => void, token?: string|null}} handlers
   */
  constructor(micStream, audioElement, { onEvent, onStatus, token = null }) {
    this.mic = micStream;
    this.audio = audioElement;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.token = token;
    this.pc = null;
    this.channel = null;
    this.sessionId = null;
    this.attempt = 0;
    this.stopped = false;
    this.timers = new Set();
    this.abort = null;
  }

  get peer() {
    return this.pc;
  }

  start() {
    this.stopped = false;
    this.attempt = 0;
    this.#connect();
  }

  /** Hang up: tell the server first, then close the peer. */
  async hangUp() {
    this.stopped = true;
    this.#clearTimers();
    if (this.abort) this.abort.abort();
    const id = this.sessionId;
    this.sessionId = null;
    if (id) {
      try {
        await fetch(`/sessions/${encodeURIComponent(id)}`, {
          method: "DELETE",
          headers: authHeaders(this.token),
        });
      } catch {
        // The server may be gone already; closing the peer below is what matters then.
      }
    }
    this.#closePeer();
    this.onStatus({ phase: "idle" });
  }

  /** Best effort when the page goes away: the request outlives the page. */
  hangUpOnUnload() {
    this.stopped = true;
    if (this.sessionId) {
      fetch(`/sessions/${encodeURIComponent(this.sessionId)}`, {
        method: "DELETE",
        headers: authHeaders(this.token),
        keepalive: true,
      }).catch(() => {});
    }
    this.#closePeer();
  }

  #later(fn, ms) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
    return timer;
  }

  #clearTimers() {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }

  async #connect() {
    this.#closePeer();
    const reconnecting = this.attempt > 0;
    this.onStatus({ phase: reconnecting ? "reconnecting" : "connecting", message: null });
    const abort = new AbortController();
    this.abort = abort;
    let iceServers;
    try {
      iceServers = await fetchIceServers(this.token, abort.signal);
    } catch (err) {
      if (abort !== this.abort || this.stopped || err.name === "AbortError") return;
      this.#fail(err);
      return;
    }
    if (abort !== this.abort || this.stopped) return;
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    try {
      const channel = pc.createDataChannel("events");
      this.#wireChannel(pc, channel);
      for (const track of this.mic.getAudioTracks()) pc.addTrack(track, this.mic);
      pc.addEventListener("track", (event) => {
        if (event.receiver && "jitterBufferTarget" in event.receiver) {
          try {
            event.receiver.jitterBufferTarget = JITTER_BUFFER_TARGET_MS;
          } catch {
            // an older browser without the setting: its own default stays
          }
        }
        this.audio.srcObject = event.streams[0] || new MediaStream([event.track]);
        this.audio.play().catch(() => {}); // autoplay may need the click we already had
      });
      pc.addEventListener("connectionstatechange", () => this.#onConnectionState(pc));
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc);
      if (pc !== this.pc) return;
      const answer = await postOffer(pc.localDescription, this.token, abort.signal);
      if (pc !== this.pc) return;
      this.sessionId = answer.session_id;
      await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    } catch (err) {
      if (pc !== this.pc || this.stopped || err.name === "AbortError") return;
      this.#fail(err);
    }
  }

  #wireChannel(pc, channel) {
    this.channel = channel;
    let ping = null;
    channel.addEventListener("open", () => {
      const send = () => {
        if (channel.readyState === "open") channel.send(JSON.stringify({ type: "ping", t: Date.now() }));
      };
      send();
      ping = setInterval(send, PING_INTERVAL_MS);
    });
    channel.addEventListener("close", () => {
      clearInterval(ping);
      if (pc === this.pc && !this.stopped) this.#lost("The connection to the agent closed.");
    });
    channel.addEventListener("message", (msg) => {
      let event;
      try {
        event = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (!event || typeof event.type !== "string" || event.type === "pong") return;
      if (event.type === "closing") {
        if (pc !== this.pc || this.stopped) return;
        if (event.reconnect === false) this.#ended(`The agent ended the call: ${event.reason}.`);
        else this.#lost(`The server ended the session (${event.reason}).`);
        return;
      }
      this.onEvent(event);
    });
  }

  #onConnectionState(pc) {
    if (pc !== this.pc || this.stopped) return;
    const state = pc.connectionState;
    if (state === "connected") {
      this.attempt = 0;
      this.#clearTimers();
      this.onStatus({ phase: "connected" });
    } else if (state === "failed" || state === "closed") {
      this.#lost("The connection to the agent failed.");
    } else if (state === "disconnected") {
      this.#later(() => {
        if (pc === this.pc && pc.connectionState === "disconnected") {
          this.#lost("The connection to the agent dropped.");
        }
      }, DISCONNECTED_GRACE_MS);
    }
  }

  /** The server closed the session for good (idle, maximum length): do not reconnect. */
  #ended(message) {
    this.stopped = true;
    this.sessionId = null;
    this.#clearTimers();
    this.#closePeer();
    this.onStatus({ phase: "ended", message });
  }

  /** A session that was up went away: forget it and try again. */
  #lost(message) {
    this.sessionId = null; // the server has dropped (or will drop) it
    this.#closePeer();
    this.#fail(new ServerError(message, { retryable: true }));
  }

  #fail(err) {
    const retryable = err instanceof ServerError ? err.retryable : false;
    this.#closePeer();
    if (!retryable || this.attempt >= MAX_ATTEMPTS) {
      const message = retryable ? `${err.message} Gave up after ${this.attempt} attempts.` : err.message;
      this.stopped = true;
      this.onStatus({ phase: "failed", message, status: err.status || 0 });
      return;
    }
    const backoff = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    const waitMs = err.retryAfterS ? err.retryAfterS * 1000 : backoff;
    this.attempt += 1;
    this.#countdown(err.message, waitMs, err.status || 0);
    this.#later(() => {
      if (!this.stopped) this.#connect();
    }, waitMs);
  }

  #countdown(message, waitMs, status) {
    const until = Date.now() + waitMs;
    const tick = () => {
      if (this.stopped) return;
      const retryInS = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      this.onStatus({ phase: "reconnecting", message, retryInS, status });
      if (retryInS > 0) this.#later(tick, 1000);
    };
    tick();
  }

  #closePeer() {
    const pc = this.pc;
    this.pc = null;
    this.channel = null;
    if (this.abort) {
      this.abort.abort();
      this.abort = null;
    }
    if (pc) {
      try {
        pc.close();
      } catch {
        // already closed
      }
    }
  }
}
