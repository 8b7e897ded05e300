// An audio level meter: a <meter> (0..1 for -60..0 dBFS) following a stream's loudness.

const FLOOR_DB = -60;
const INTERVAL_MS = 100;
let context = null;

export class LevelMeter {
  #source;
  #timer;
  #element;

  constructor(stream, element) {
    context ??= new AudioContext();
    context.resume();
    const analyser = context.createAnalyser();
    analyser.fftSize = 2048;
    this.#source = context.createMediaStreamSource(stream);
    this.#source.connect(analyser);
    this.#element = element;
    const samples = new Float32Array(analyser.fftSize);
    this.#timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      const rms = Math.sqrt(samples.reduce((sum, x) => sum + x * x, 0) / samples.length);
      const db = Math.max(FLOOR_DB, 20 * Math.log10(rms || 1e-9));
      element.value = 1 - db / FLOOR_DB;
      element.textContent = `${Math.round(db)} dB`;
    }, INTERVAL_MS);
  }

  stop() {
    clearInterval(this.#timer);
    this.#source.disconnect();
    this.#element.value = 0;
  }
}
