#!/usr/bin/env python3
"""Numpy-only reference for ebgand's log-mel features (src/pipeline/features.rs).

Usage: python logmel_reference.py WAV OUT.npy [--n-fft 1024] [--hop 512] [--n-mels 64]
                                  [--fmin 0] [--fmax SR/2]

Reads a 16-bit PCM mono WAV with the stdlib ``wave`` module (int16 scaled by 1/32768) and writes
the [n_frames, n_mels] float64 log-mel spectrogram to OUT.npy. The definition is the DCASE 2020
Task 2 baseline's feature on top of librosa >= 0.10 defaults, restated here without librosa:

1. Centred frames: pad n_fft // 2 zeros at both ends (``center=True, pad_mode="constant"``);
   frame t starts at t * hop in the padded signal; n_frames = 1 + (len + 2 * (n_fft // 2) - n_fft)
   // hop.
2. Periodic Hann window of length n_fft: w[n] = 0.5 - 0.5 cos(2 pi n / n_fft).
3. Power spectrum |X|^2 of the one-sided FFT (n_fft // 2 + 1 bins).
4. Mel filterbank as ``librosa.filters.mel(htk=False, norm="slaney")``: Slaney mel scale (linear
   below 1 kHz, logarithmic above), n_mels + 2 band edges evenly spaced in mel between fmin and
   fmax, triangles over FFT-bin frequencies k * sr / n_fft, each scaled by
   2 / (f_upper - f_lower) (Slaney area normalisation).
5. 10 * log10(mel + sys.float_info.epsilon) (DCASE: 20 / power * log10(...) with power = 2).

Everything is computed in float64 (librosa's own default builds the filterbank in float32; the
difference is far below the 1e-3 dB tolerance the Rust test applies).
"""

import argparse
import sys
import wave

import numpy as np

# Slaney mel scale constants (librosa.hz_to_mel with htk=False).
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz):
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_t = hz >= _MIN_LOG_HZ
    return np.where(log_t, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-300) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log_t = mel >= _MIN_LOG_MEL
    return np.where(log_t, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


def mel_filterbank(sr, n_fft, n_mels, fmin=0.0, fmax=None):
    """[n_mels, n_fft // 2 + 1] weights, as librosa.filters.mel(htk=False, norm='slaney')."""
    if fmax is None:
        fmax = sr / 2.0
    fftfreqs = np.arange(n_fft // 2 + 1, dtype=np.float64) * (sr / n_fft)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float64)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def hann_periodic(n):
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n, dtype=np.float64) / n)


def power_spectrogram(y, n_fft, hop):
    """[n_frames, n_fft // 2 + 1] |rFFT|^2 of centred, zero-padded, Hann-windowed frames."""
    pad = n_fft // 2
    padded = np.concatenate([np.zeros(pad), np.asarray(y, dtype=np.float64), np.zeros(pad)])
    if len(padded) < n_fft:
        return np.zeros((0, n_fft // 2 + 1))
    n_frames = 1 + (len(padded) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    spec = np.fft.rfft(padded[idx] * hann_periodic(n_fft)[None, :], n=n_fft, axis=1)
    return spec.real**2 + spec.imag**2


def log_mel(y, sr, n_fft=1024, hop=512, n_mels=64, fmin=0.0, fmax=None):
    """[n_frames, n_mels] float64 log-mel energies in dB."""
    mel = power_spectrogram(y, n_fft, hop) @ mel_filterbank(sr, n_fft, n_mels, fmin, fmax).T
    return 10.0 * np.log10(mel + sys.float_info.epsilon)


def read_wav_int16_mono(path):
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getcomptype() != "NONE":
            raise SystemExit(
                f"{path}: need 16-bit PCM mono, got {w.getnchannels()} channels, "
                f"{8 * w.getsampwidth()} bits, {w.getcomptype()}"
            )
        sr = w.getframerate()
        raw = w.readframes(w.getnframes())
    return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0, sr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wav")
    ap.add_argument("out")
    ap.add_argument("--n-fft", type=int, default=1024)
    ap.add_argument("--hop", type=int, default=512)
    ap.add_argument("--n-mels", type=int, default=64)
    ap.add_argument("--fmin", type=float, default=0.0)
    ap.add_argument("--fmax", type=float, default=None)
    args = ap.parse_args(argv)
    y, sr = read_wav_int16_mono(args.wav)
    np.save(args.out, log_mel(y, sr, args.n_fft, args.hop, args.n_mels, args.fmin, args.fmax))


if __name__ == "__main__":
    main()
