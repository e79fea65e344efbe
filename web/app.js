// Minimal client: microphone in, agent audio out, "events" data channel with keepalive.
const button = document.getElementById("talk");
const statusLine = document.getElementById("status");
const audio = document.getElementById("agent-audio");
let pc = null;
let pingTimer = null;
let sessionId = null;

function waitForIceGathering(peer) {
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    peer.addEventListener("icegatheringstatechange", () => {
      if (peer.iceGatheringState === "complete") resolve();
    });
  });
}

async function connect() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  pc = new RTCPeerConnection({ iceServers: [] });
  const channel = pc.createDataChannel("events");
  channel.onopen = () => {
    pingTimer = setInterval(() => channel.send(JSON.stringify({ type: "ping" })), 1000);
  };
  channel.onmessage = (msg) => {
    const event = JSON.parse(msg.data);
    if (event.type !== "pong") statusLine.textContent = event.type;
  };
  stream.getTracks().forEach((t) => pc.addTrack(t, stream));
  pc.ontrack = (e) => { audio.srcObject = e.streams[0] || new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIceGathering(pc);
  const response = await fetch("/offer", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  sessionId = answer.session_id;
  await pc.setRemoteDescription(answer);
  statusLine.textContent = "Connected";
  button.textContent = "Hang up";
}

async function hangUp() {
  clearInterval(pingTimer);
  if (sessionId) await fetch(`/sessions/${sessionId}`, { method: "DELETE" }).catch(() => {});
  if (pc) pc.close();
  pc = null;
  sessionId = null;
  statusLine.textContent = "Idle";
  button.textContent = "Connect";
}

button.addEventListener("click", () => {
  (pc ? hangUp() : connect()).catch((err) => { statusLine.textContent = `Error: ${err.message}`; });
});
