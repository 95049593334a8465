// A browser voice call: the WebSocket of GET /api/calls/web/{run_id}/audio
// (the session cookie goes with it; the browser's Origin header passes the
// server's check), the microphone through the `voice-capture` worklet,
// and the agent's speech through the `voice-playback` worklet. The page
// gets what happens through `on`: transcript(role, text, final),
// speaking(), interrupted(), played(samples), problem(message),
// ended(run), closed(message).

import { get } from "./api.js";

// The server takes 10 to 200 ms a frame; 20 ms keeps the delay low.
const FRAME_MS = 20;
const MIC_RATE = 16000;

// Why the microphone cannot be used, in words a person can act on.
function micProblem(e) {
  const name = e && e.name;
  if (name === "NotAllowedError" || name === "SecurityError") return "the browser was not allowed to use it (allow the microphone for this site and start the call again)";
  if (name === "NotFoundError" || name === "OverconstrainedError") return "no microphone was found";
  if (name === "NotReadableError" || name === "AbortError") return "another program is using it";
  return e && e.message ? e.message : "the browser refused it";
}

// Whether this browser can take part in a voice call at all, or why not.
export function voiceSupport() {
  if (!window.isSecureContext) return "the page must be opened over https (or on localhost) for the microphone to work";
  if (!window.AudioWorkletNode || !window.AudioContext || !window.WebSocket) return "this browser lacks Web Audio worklets";
  return null;
}

export class VoiceCall {
  // Call from a click handler: the AudioContext is made while the click
  // counts as the person's gesture, so the browser lets it play.
  constructor(runId, on) {
    this.runId = runId;
    this.on = on;
    this.audio = new AudioContext();
    this.socket = null;
    this.stream = null;
    this.playback = null;
    this.ended = false;
    this.muted = false;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/api/calls/web/${encodeURIComponent(this.runId)}/audio`;
  }

  // Opens the socket and waits for `ready`; rejects with an Error that
  // says why when the server refused the call.
  async open() {
    await this.audio.audioWorklet.addModule("/voice-worklet.js");
    await this.audio.resume();
    const socket = new WebSocket(this.url());
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    const ready = await new Promise((resolve) => {
      socket.onmessage = (ev) => {
        if (typeof ev.data !== "string") return;
        let frame = null;
        try {
          frame = JSON.parse(ev.data);
        } catch {
          return;
        }
        if (frame.type === "ready") resolve(frame);
      };
      socket.onclose = () => resolve(null);
    });
    if (!ready) {
      // The browser tells a page nothing about a refused upgrade; the
      // same URL as a plain request answers with the server's reason.
      throw new Error(await this.refusal());
    }
    this.playback = new AudioWorkletNode(this.audio, "voice-playback", {
      numberOfInputs: 0,
      outputChannelCount: [1],
      processorOptions: { rate: ready.sample_rate },
    });
    this.playback.port.onmessage = (ev) => this.on.played(ev.data.played);
    this.playback.connect(this.audio.destination);
    socket.onmessage = (ev) => this.receive(ev.data);
    socket.onclose = (ev) => this.closed(ev);
  }

  async refusal() {
    try {
      await get(`/api/calls/web/${encodeURIComponent(this.runId)}/audio`);
    } catch (e) {
      if (e.body && e.body.code !== "WEBSOCKET_REQUIRED" && e.message) return e.message;
    }
    return "The voice connection could not be opened (the server or the network closed it)";
  }

  // Starts the microphone; rejects with the reason when it cannot.
  async startMic() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw new Error("this browser gives the page no microphone");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (e) {
      throw new Error(micProblem(e));
    }
    if (this.ended) {
      this.stopMic();
      return;
    }
    const source = this.audio.createMediaStreamSource(this.stream);
    const capture = new AudioWorkletNode(this.audio, "voice-capture", {
      numberOfOutputs: 0,
      processorOptions: { rate: MIC_RATE, frameMs: FRAME_MS },
    });
    capture.port.onmessage = (ev) => {
      if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(ev.data);
    };
    source.connect(capture);
    this.capture = { source, capture };
  }

  stopMic() {
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    if (this.capture) {
      this.capture.source.disconnect();
      this.capture.capture.port.onmessage = null;
    }
    this.stream = null;
    this.capture = null;
  }

  // Muted, the microphone sends silence: the call stays live and the
  // speech-to-text hears nothing.
  setMuted(muted) {
    this.muted = muted;
    if (this.stream) for (const t of this.stream.getAudioTracks()) t.enabled = !muted;
  }

  get hasMic() {
    return this.stream !== null;
  }

  sendText(text) {
    this.send({ type: "text", text });
  }

  send(frame) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) throw new Error("The voice connection is closed");
    this.socket.send(JSON.stringify(frame));
  }

  // Asks the server to end the call; `ended(run)` follows.
  hangUp() {
    this.stopMic();
    this.send({ type: "end" });
  }

  receive(data) {
    if (typeof data !== "string") {
      // 16-bit little-endian mono PCM at the `ready` rate.
      const view = new DataView(data);
      const samples = new Float32Array(data.byteLength >> 1);
      for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(i * 2, true) / 0x8000;
      if (this.playback) this.playback.port.postMessage(samples, [samples.buffer]);
      return;
    }
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this.on.problem("The server sent a frame this page cannot read");
      return;
    }
    switch (frame.type) {
      case "transcript":
        this.on.transcript(frame.role === "user" ? "user" : "assistant", String(frame.text ?? ""), frame.final === true);
        break;
      case "speaking":
        this.on.speaking();
        break;
      case "interrupted":
        if (this.playback) this.playback.port.postMessage("flush");
        this.on.interrupted();
        break;
      case "error":
        this.on.problem(frame.message ? String(frame.message) : `The server reported a problem (${frame.code || "no code given"})`);
        break;
      case "ended":
        this.ended = true;
        this.on.ended(frame.run || {});
        break;
      default:
        break;
    }
  }

  closed(ev) {
    this.stopMic();
    if (!this.ended) {
      this.ended = true;
      const why = ev.reason ? `: ${ev.reason}` : ev.code === 1006 ? " (the connection was lost)" : "";
      this.on.closed(`The voice connection closed${why}. The call has ended.`);
    }
    this.shutDown();
  }

  // Leaves the call: the socket closed (the server ends and bills the run
  // when it is closed without `end`), microphone and audio released.
  close() {
    this.ended = true;
    this.stopMic();
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) this.socket.close(1000, "left the page");
    this.shutDown();
  }

  shutDown() {
    if (this.audio.state !== "closed") this.audio.close().catch(() => {});
  }
}
