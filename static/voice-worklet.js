// The audio side of a browser voice call, run on the audio thread
// (AudioWorklet): `voice-capture` turns the microphone, at whatever rate
// the device runs, into 16-bit little-endian mono PCM at the server's rate
// in frames of a fixed length; `voice-playback` plays the agent's PCM from
// a queue that a barge-in flushes, and counts the samples it has played.
// Loaded by addModule from this server; it imports nothing.

// A windowed-sinc low-pass filter with `taps` taps and the cutoff `cutoff`
// (a fraction of the sample rate): what keeps a downsampled voice free of
// aliasing.
function lowPass(cutoff, taps) {
  const h = new Float32Array(taps);
  const mid = (taps - 1) / 2;
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const x = i - mid;
    const sinc = x === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * x) / (Math.PI * x);
    const blackman = 0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * blackman;
    sum += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] /= sum;
  return h;
}

// Converts a stream of blocks from one rate to another: low-pass filtered
// when going down, then read at the output's instants by linear
// interpolation. Its state carries across blocks, so block edges leave no
// clicks.
class Resampler {
  constructor(from, to) {
    this.step = from / to; // input samples per output sample
    this.taps = from > to ? lowPass((0.45 * to) / from, 63) : null;
    this.history = new Float32Array(this.taps ? this.taps.length - 1 : 0);
    this.last = 0; // the previous block's last (filtered) sample
    this.at = 0; // where the next output sample lies, from `last`
  }

  // Calls `emit(sample)` for each output sample `block` completes.
  push(block, emit) {
    const filtered = this.taps ? this.filter(block) : block;
    const n = filtered.length;
    // Position p: 0 is `last`, 1..n are filtered[0..n-1].
    const at = (p) => (p === 0 ? this.last : filtered[p - 1]);
    while (this.at + 1 <= n) {
      const i = Math.floor(this.at);
      const frac = this.at - i;
      emit(at(i) * (1 - frac) + at(i + 1) * frac);
      this.at += this.step;
    }
    this.at -= n;
    if (n > 0) this.last = filtered[n - 1];
  }

  filter(block) {
    const taps = this.taps;
    const k = taps.length;
    const past = this.history.length;
    const all = new Float32Array(past + block.length);
    all.set(this.history);
    all.set(block, past);
    const out = new Float32Array(block.length);
    for (let i = 0; i < block.length; i++) {
      let acc = 0;
      for (let j = 0; j < k; j++) acc += taps[j] * all[i + j];
      out[i] = acc;
    }
    this.history = all.slice(all.length - past);
    return out;
  }
}

// The microphone to PCM frames: options {rate, frameMs}. Each frame goes
// to the page as an ArrayBuffer of 16-bit little-endian samples.
class VoiceCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { rate, frameMs } = options.processorOptions;
    this.resampler = new Resampler(sampleRate, rate);
    this.frameSamples = Math.round((rate * frameMs) / 1000);
    this.startFrame();
  }

  startFrame() {
    this.frame = new DataView(new ArrayBuffer(this.frameSamples * 2));
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    // A stereo microphone is mixed down to mono.
    let mono = channels[0];
    if (channels.length > 1) {
      mono = new Float32Array(channels[0].length);
      for (const ch of channels) for (let i = 0; i < ch.length; i++) mono[i] += ch[i] / channels.length;
    }
    this.resampler.push(mono, (s) => {
      const v = Math.max(-1, Math.min(1, s));
      this.frame.setInt16(this.filled * 2, v < 0 ? v * 0x8000 : v * 0x7fff, true);
      this.filled += 1;
      if (this.filled === this.frameSamples) {
        const buf = this.frame.buffer;
        this.port.postMessage(buf, [buf]);
        this.startFrame();
      }
    });
    return true;
  }
}

// The agent's speech: options {rate}. The page posts Float32Array chunks
// at that rate, or "flush" to drop what is queued (a barge-in). Every
// tenth of a second, and after a flush, it tells the page how many
// samples it has played in all and how many are still queued.
class VoicePlayback extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.step = options.processorOptions.rate / sampleRate; // source samples per output sample
    this.queue = [];
    this.offset = 0; // read position in queue[0], fractional
    this.queued = 0;
    this.played = 0;
    this.reportEvery = Math.round(sampleRate / 10);
    this.sinceReport = 0;
    this.port.onmessage = (ev) => {
      if (ev.data === "flush") {
        this.queue = [];
        this.offset = 0;
        this.queued = 0;
        this.report();
      } else if (ev.data instanceof Float32Array && ev.data.length > 0) {
        this.queue.push(ev.data);
        this.queued += ev.data.length;
      }
    };
  }

  report() {
    this.sinceReport = 0;
    this.port.postMessage({ played: Math.floor(this.played), queued: this.queued });
  }

  // The source sample `ahead` samples past the read position, across chunks.
  sample(ahead) {
    let i = Math.floor(this.offset) + ahead;
    for (const chunk of this.queue) {
      if (i < chunk.length) return chunk[i];
      i -= chunk.length;
    }
    return 0;
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    for (let n = 0; n < out.length; n++) {
      if (this.queue.length === 0) {
        out[n] = 0;
        continue;
      }
      const frac = this.offset - Math.floor(this.offset);
      out[n] = this.sample(0) * (1 - frac) + this.sample(1) * frac;
      const before = Math.floor(this.offset);
      this.offset += this.step;
      const moved = Math.floor(this.offset) - before;
      this.played += moved;
      this.queued -= moved;
      while (this.queue.length > 0 && this.offset >= this.queue[0].length) {
        this.offset -= this.queue[0].length;
        this.queue.shift();
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= this.reportEvery) this.report();
    return true;
  }
}

registerProcessor("voice-capture", VoiceCapture);
registerProcessor("voice-playback", VoicePlayback);
