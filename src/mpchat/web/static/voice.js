'use strict';
// The demo page's voice (docs/voice.md). 按住说话 records with MediaRecorder while held, turns
// the recording into a 16 kHz mono WAV (browsers record webm or ogg; the service takes mp3, aac,
// wav, m4a and pcm) and sends it to /api/v1/voice through app.js (window.mpchatPage): the
// transcript replaces the question's "（语音）", the answer streams like a typed one.
// 播放 reads an answer aloud sentence by sentence (/messages/{id}/speech?sentence=N): a sentence
// not yet written (409) is asked again after Retry-After, 204 ends.
(() => {
  const RATE = 16000;
  const button = document.getElementById('talk-button');
  let recorder = null;
  let stream = null;
  let chunks = [];
  let held = false; // released before the microphone opened: no recording

  async function startRecording() {
    const page = window.mpchatPage;
    if (!page || page.busy() || recorder) return;
    held = true;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      page.notice('无法使用麦克风：' + err.message);
      return;
    }
    if (!held) {
      for (const track of stream.getTracks()) track.stop();
      return;
    }
    chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => {
      if (e.data.size) chunks.push(e.data);
    };
    recorder.start();
    button.dataset.state = 'recording';
    button.textContent = '松开发送';
  }

  async function stopRecording() {
    held = false;
    const r = recorder;
    if (!r) return;
    recorder = null;
    const stopped = new Promise((resolve) => (r.onstop = resolve));
    r.stop();
    await stopped;
    for (const track of stream.getTracks()) track.stop();
    button.dataset.state = '';
    button.textContent = '按住说话';
    const page = window.mpchatPage;
    try {
      page.sendVoice(await toWav(new Blob(chunks, { type: r.mimeType })));
    } catch (err) {
      page.notice('录音无法处理：' + err.message);
    }
  }

  async function toWav(blob) {
    const ctx = new AudioContext();
    let decoded;
    try {
      decoded = await ctx.decodeAudioData(await blob.arrayBuffer());
    } finally {
      ctx.close();
    }
    const frames = Math.max(Math.ceil(decoded.duration * RATE), 1);
    const offline = new OfflineAudioContext(1, frames, RATE); // resampled and mixed down
    const source = offline.createBufferSource();
    source.buffer = decoded;
    source.connect(offline.destination);
    source.start();
    const mono = (await offline.startRendering()).getChannelData(0);
    return new Blob([wav(mono, RATE)], { type: 'audio/wav' });
  }

  function wav(samples, rate) {
    const out = new DataView(new ArrayBuffer(44 + samples.length * 2));
    const ascii = (at, s) => {
      for (let i = 0; i < s.length; i++) out.setUint8(at + i, s.charCodeAt(i));
    };
    ascii(0, 'RIFF');
    out.setUint32(4, 36 + samples.length * 2, true);
    ascii(8, 'WAVE');
    ascii(12, 'fmt ');
    out.setUint32(16, 16, true); // PCM header size
    out.setUint16(20, 1, true); // PCM
    out.setUint16(22, 1, true); // mono
    out.setUint32(24, rate, true);
    out.setUint32(28, rate * 2, true);
    out.setUint16(32, 2, true);
    out.setUint16(34, 16, true);
    ascii(36, 'data');
    out.setUint32(40, samples.length * 2, true);
    for (let i = 0; i < samples.length; i++) {
      const x = Math.max(-1, Math.min(1, samples[i]));
      out.setInt16(44 + i * 2, x < 0 ? x * 0x8000 : x * 0x7fff, true);
    }
    return out.buffer;
  }

  // ---- 播放 ----

  function addPlay(answer) {
    if (!answer.dataset.messageId || answer.querySelector('.play')) return;
    const play = document.createElement('button');
    play.type = 'button';
    play.className = 'play';
    play.dataset.testid = 'play-button';
    play.textContent = '播放';
    play.addEventListener('click', () => speak(answer));
    answer.appendChild(play);
  }

  async function speak(answer) {
    const page = window.mpchatPage;
    const id = encodeURIComponent(answer.dataset.messageId);
    answer.dataset.speech = 'playing';
    answer.dataset.spoken = '0';
    for (let n = 0; ;) {
      const res = await page.authed('/messages/' + id + '/speech?sentence=' + n);
      if (res.status === 204) break;
      if (res.status === 409) {
        const wait = Number(res.headers.get('Retry-After')) || 1;
        await new Promise((resolve) => setTimeout(resolve, wait * 1000));
        continue;
      }
      const url = res.ok ? URL.createObjectURL(await res.blob()) : '';
      try {
        if (!url) throw new Error(String(res.status));
        await playOnce(url);
      } catch (err) {
        answer.dataset.speech = 'error';
        page.notice('播放失败：' + err.message);
        return;
      } finally {
        if (url) URL.revokeObjectURL(url);
      }
      n += 1;
      answer.dataset.spoken = String(n);
    }
    answer.dataset.speech = 'done';
  }

  function playOnce(url) {
    return new Promise((resolve, reject) => {
      const audio = new Audio(url);
      audio.onended = resolve;
      audio.onerror = () => reject(new Error('无法播放'));
      audio.play().catch(reject);
    });
  }

  button.addEventListener('pointerdown', (e) => {
    e.preventDefault();
    startRecording();
  });
  for (const name of ['pointerup', 'pointerleave', 'pointercancel']) {
    button.addEventListener(name, () => stopRecording());
  }

  window.mpchatVoice = { addPlay };
})();
