// Microphone level meter. Web Audio is used only to measure the local microphone; nothing
// here is connected to the speakers (agent audio plays through the WebRTC <audio> element,
// which Chrome's echo canceller uses as its reference).

export class LevelMeter {
  /**
   * @param {MediaStream} stream
   * @param {(level: number) => void} onLevel  0..1, about 30 times a second
   */
  constructor(stream, onLevel) {
    this.onLevel = onLevel;
    this.context = new AudioContext();
    this.source = this.context.createMediaStreamSource(stream);
    this.analyser = this.context.createAnalyser();
    this.analyser.fftSize = 1024;
    this.analyser.smoothingTimeConstant = 0.2;
    this.source.connect(this.analyser);
    this.samples = new Float32Array(this.analyser.fftSize);
    this.level = 0;
    this.timer = setInterval(() => this.#tick(), 33);
    if (this.context.state === "suspended") this.context.resume().catch(() => {});
  }

  #tick() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const s of this.samples) sum += s * s;
    const rms = Math.sqrt(sum / this.samples.length);
    // Map -60..0 dBFS onto 0..1; fall slower than rise so the bar reads calmly.
    const db = 20 * Math.log10(rms + 1e-9);
    const target = Math.min(1, Math.max(0, (db + 60) / 60));
    this.level = target > this.level ? target : this.level * 0.85 + target * 0.15;
    this.onLevel(this.level);
  }

  close() {
    clearInterval(this.timer);
    this.source.disconnect();
    this.context.close().catch(() => {});
    this.onLevel(0);
  }
}
