// voice-agent page: wires the talk button, the microphone, the connection and the UI.
import { AgentConnection } from "./connection.js";
import { LevelMeter } from "./meter.js";
import { AgentState, ConversationLog, STATE_LABELS } from "./ui.js";

const $ = (id) => document.getElementById(id);
const talk = $("talk");
const talkLabel = $("talk-label");
const hint = $("talk-hint");
const stateText = $("state-text");
const connectionText = $("connection-text");
const errorBox = $("error");
const meter = $("meter");
const audio = $("agent-audio");

// The access token, when the server has one, comes in the page's URL (?token=SECRET) and
// goes with every request as a bearer token. Referrer-Policy: no-referrer keeps it out of
// Referer headers.
const token = new URLSearchParams(window.location.search).get("token") || null;

const log = new ConversationLog($("log"), $("empty"), $("clear"));
const agentState = new AgentState((state) => {
  document.body.dataset.state = state;
  stateText.textContent = STATE_LABELS[state] || state;
});

let mic = null;
let levelMeter = null;
let connection = null;
let busy = false; // between a click and the end of its async work

function showError(message) {
  errorBox.textContent = message || "";
  errorBox.hidden = !message;
}

function setConnection(phase, text) {
  const changed = document.body.dataset.connection !== phase;
  document.body.dataset.connection = phase;
  connectionText.textContent = text;
  // The footer counts the server's sessions: ours among them once connected, not after.
  if (changed && ["connected", "idle", "failed"].includes(phase)) showServerInfo();
}

function setTalking(on) {
  talk.setAttribute("aria-pressed", String(on));
  talkLabel.textContent = on ? "Hang up" : "Talk";
  talk.setAttribute("aria-label", on ? "Hang up" : "Talk to the agent");
  hint.textContent = on
    ? "Speak naturally; you can talk over the agent. Press again to hang up."
    : "Press to start a conversation. Space or Enter works too.";
}

function setLevel(level) {
  const pct = Math.round(level * 100);
  document.documentElement.style.setProperty("--level", level.toFixed(3));
  if (meter.getAttribute("aria-valuenow") !== String(pct)) meter.setAttribute("aria-valuenow", String(pct));
}

function micErrorMessage(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied. Allow the microphone for this site (the icon in the address bar), then press Talk again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Connect one, then press Talk again.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone could not be opened: another application may be using it.";
    default:
      return `The microphone could not be opened: ${(err && err.message) || err}`;
  }
}

async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw Object.assign(new Error("this page needs https (or localhost) to use the microphone"), {
      name: "SecurityError",
    });
  }
  return navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    video: false,
  });
}

function onStatus({ phase, message, retryInS, status }) {
  switch (phase) {
    case "connecting":
      setConnection("connecting", "Connecting…");
      agentState.connecting();
      break;
    case "connected":
      setConnection("connected", "Connected");
      showError(null);
      agentState.reset(true);
      break;
    case "reconnecting": {
      log.settle();
      agentState.connecting();
      if (retryInS === undefined) {
        setConnection("reconnecting", "Reconnecting…");
      } else {
        const wait = retryInS > 0 ? `retrying in ${retryInS} s` : "retrying now";
        const label = { 503: "Server full", 429: "Too many connections" }[status] || "Reconnecting";
        setConnection("reconnecting", `${label}, ${wait}`);
        showError(`${message} Trying again ${retryInS > 0 ? `in ${retryInS} s` : "now"}…`);
      }
      break;
    }
    case "failed":
      setConnection("failed", [400, 401, 403, 413].includes(status) ? "Refused" : "Disconnected");
      showError(message);
      stopLocal();
      break;
    case "ended":
      stopLocal();
      showError(null);
      setConnection("idle", "Not connected");
      log.note(message);
      break;
    case "idle":
      setConnection("idle", "Not connected");
      break;
    default:
      break;
  }
}

function onEvent(event) {
  agentState.handle(event);
  log.handle(event);
}

function stopLocal() {
  if (levelMeter) levelMeter.close();
  levelMeter = null;
  if (mic) for (const track of mic.getTracks()) track.stop();
  mic = null;
  connection = null;
  audio.srcObject = null;
  log.settle();
  agentState.reset(false);
  setTalking(false);
}

async function start() {
  showError(null);
  setConnection("connecting", "Asking for the microphone…");
  agentState.connecting();
  try {
    mic = await openMicrophone();
  } catch (err) {
    mic = null;
    setConnection("idle", "Not connected");
    agentState.reset(false);
    showError(micErrorMessage(err));
    document.body.dataset.mic = "denied";
    return;
  }
  document.body.dataset.mic = "on";
  setTalking(true);
  try {
    levelMeter = new LevelMeter(mic, setLevel);
  } catch {
    levelMeter = null; // the meter is a nicety; the call works without it
  }
  connection = new AgentConnection(mic, audio, { onEvent, onStatus, token });
  connection.start();
}

async function hangUp() {
  const current = connection;
  connection = null;
  if (current) await current.hangUp();
  stopLocal();
  setConnection("idle", "Not connected");
  log.note("Call ended.");
}

talk.addEventListener("click", async () => {
  if (busy) return;
  busy = true;
  talk.setAttribute("aria-busy", "true");
  try {
    if (mic) await hangUp();
    else await start();
  } catch (err) {
    showError(`Something went wrong: ${err.message || err}`);
    stopLocal();
  } finally {
    busy = false;
    talk.removeAttribute("aria-busy");
  }
});

window.addEventListener("pagehide", () => {
  if (connection) connection.hangUpOnUnload();
});

async function showServerInfo() {
  const models = $("models");
  try {
    const response = await fetch("/health", { cache: "no-store" });
    if (response.status === 503) {
      const status = await response.json().then((h) => h.status, () => null);
      models.textContent =
        status === "full" ? "The server is full: try again shortly." : "The server is shutting down.";
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const health = await response.json();
    const info = health.models || {};
    const parts = [];
    if (info.profile) parts.push(`models: ${info.profile}`);
    const device = info.device || {};
    if (device.description) parts.push(device.description);
    else if (device.llm) parts.push(`LLM on ${device.llm}, speech recognition on ${device.stt}`);
    if (health.max_sessions) parts.push(`${health.sessions} of ${health.max_sessions} sessions in use`);
    models.textContent = parts.length ? parts.join(" · ") : "Server ready";
    models.title = ["stt", "llm", "voice", "turn"]
      .filter((k) => info[k] && info[k].path)
      .map((k) => `${k}: ${info[k].path}`)
      .join("\n");
    $("synthetic").hidden = !info.synthetic;
    showFallback(info.fallback);
  } catch {
    models.textContent = "The server is unreachable.";
  }
}

// The server serves the small profile because the one it would pick could not be fetched.
function showFallback(fallback) {
  $("fallback").hidden = !fallback;
  if (!fallback) return;
  $("fallback-requested").textContent = fallback.requested;
  $("fallback-reason").textContent = fallback.reason;
  $("fallback-command").textContent = fallback.command;
}

const SERVER_INFO_POLL_MS = 15000; // other visitors' sessions come and go too

setTalking(false);
agentState.reset(false);
showServerInfo();
setInterval(() => {
  if (document.visibilityState === "visible") showServerInfo();
}, SERVER_INFO_POLL_MS);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") showServerInfo();
});
