"""Spoken digits: "zero".."nine" spoken by espeak-ng voices, classified from log-mel frames streamed one by one.

Replaces the original traceTorch's audio example (Kaggle BirdCLEF+ 2026, not fetchable offline) with a real
audio task that is: every utterance is synthesised by Debian's ``espeak-ng`` from a seeded draw of accent
(``-v en-us``, ``en-gb-scotland``, ...), timbre variant (``+m1..+m7``, ``+f1..+f5``), speed (``-s``), pitch
(``-p``) and amplitude (``-a``), resampled to 8 kHz (telephone band, like the real test set), trimmed of
silence, placed at a seeded offset in a fixed-length clip and mixed with white noise at a seeded SNR.

Splits, by voice (a voice is one accent + variant pair): ``train`` and ``seen`` (new utterances of the training
voices) use neither a held-out accent nor a held-out variant; ``heldout`` uses every voice that has at least
one of them, so its accuracy measures generalisation to unseen speakers. A second, real test set: the recorded
digits of Debian's ``asterisk-core-sounds-en-wav`` (``en_US_f_Allison/digits/0.wav`` .. ``9.wav``, one real
speaker, 8 kHz), evaluation only, clean and with seeded noise.

Features: ``torch.stft`` (Hann window) power spectrum times a mel filterbank taken once from
``librosa.filters.mel`` (librosa's feature functions compile numba kernels for ~30 s; the filterbank is plain
numpy), in dB relative to the clip's maximum, floored at -80 dB and scaled to [0, 1] (the original's ``top_db 80,
/80``). Models read the frames time-first, one per step (``scan`` gives the same numbers as stepping; the results
record a check of that); the class logits are the mean over frames of the per-frame readout, and the loss is
cross-entropy on that mean (the original's "clip logits = mean over frames").

Parts: one per ``[models.<part>]`` table (``snn``, ``gru``, ``mamba``), each trained for every seed in ``seeds``.
The data set is built once and cached in ``experiments/.data/spoken_digits/`` (keyed by the data config and
espeak-ng's version); the smoke variant reads a tiny set shipped in ``data/smoke/`` (see the CHANGELOG).

``python experiments/spoken_digits/experiment.py make-smoke-set`` regenerates that shipped set (needs espeak-ng).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tracetorch as tt
import tracetorch_zoo as zoo
from tracetorch import rnn, snn, ssm
from tracetorch_zoo.audio import FrameClassifier, SpikingBlock
from ttexp import Trainer
from ttexp.files import atomic_write
from ttexp.results import provenance_line, save_figure, table_header, write_json, write_weights
from ttexp.schedule import lr_at

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HERE = Path(__file__).resolve().parent
SMOKE_DIR = HERE / "data" / "smoke"


# ------------------------------------------------------------------------------------------------ audio I/O
def read_wav(path_or_bytes: str | Path | bytes) -> tuple[np.ndarray, int]:
    """``(samples float64 in [-1, 1], rate)`` of a 16-bit mono PCM WAV (file or bytes).

    espeak-ng's ``--stdout`` WAV carries a placeholder length (0x7ffff000), so the data chunk is read to the end.
    """
    raw = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos, rate, data = 12, None, None
    while pos + 8 <= len(raw):
        cid, size = raw[pos : pos + 4], int.from_bytes(raw[pos + 4 : pos + 8], "little")
        body = raw[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt, channels, rate = (int.from_bytes(body[a:b], "little") for a, b in ((0, 2), (2, 4), (4, 8)))
            bits = int.from_bytes(body[14:16], "little")
            if (fmt, channels, bits) != (1, 1, 16):
                raise ValueError(f"need 16-bit mono PCM, got format {fmt}, {channels} channels, {bits} bits")
        elif cid == b"data":
            data = body[: len(body) // 2 * 2]
            break
        pos += 8 + size + (size & 1)
    if rate is None or data is None:
        raise ValueError("WAV without fmt or data chunk")
    return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0, rate


def write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    """16-bit mono PCM WAV (stdlib ``wave``)."""
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy, a librosa dependency) from ``rate`` to ``target`` Hz."""
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g)


def trim_silence(x: np.ndarray, rate: int, top_db: float = 40.0, margin_s: float = 0.02) -> np.ndarray:
    """Cut leading and trailing frames (20 ms) quieter than ``top_db`` below the loudest, keeping ``margin_s``."""
    hop = int(0.02 * rate)
    n = max(1, len(x) // hop)
    energy = np.array([np.mean(x[i * hop : (i + 1) * hop] ** 2) + 1e-12 for i in range(n)])
    loud = np.flatnonzero(10 * np.log10(energy / energy.max()) > -top_db)
    m = int(margin_s * rate)
    return x[max(0, loud[0] * hop - m) : min(len(x), (loud[-1] + 1) * hop + m)]


# ----------------------------------------------------------------------------------------------- synthesis
def espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip()


def synthesise(word: str, voice: str, speed: int, pitch: int, amplitude: int, rate: int) -> np.ndarray:
    """One utterance from espeak-ng, resampled to ``rate`` and trimmed of silence (float64 in [-1, 1])."""
    cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude), "--stdout", word]
    x, r = read_wav(subprocess.run(cmd, capture_output=True, check=True).stdout)
    return trim_silence(resample(x, r, rate), rate)


def plan_utterances(dc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every utterance of the synthetic set with its seeded parameters (a pure function of the data config).

    A voice is ``accent+variant``; it belongs to ``heldout`` if its accent or its variant is held out, else to
    ``train`` (``train_reps`` utterances per digit) and ``seen`` (``seen_reps`` more, never trained on).
    """
    plan = []
    for a in dc["accents"]:
        for v in dc["variants"]:
            held = a in dc["heldout_accents"] or v in dc["heldout_variants"]
            splits = (
                [("heldout", dc["heldout_reps"])] if held else [("train", dc["train_reps"]), ("seen", dc["seen_reps"])]
            )
            for split, reps in splits:
                for d in range(10):
                    for r in range(reps):
                        plan.append({"split": split, "accent": a, "variant": v, "digit": d, "rep": r})
    for i, u in enumerate(plan):
        g = np.random.default_rng([dc["seed"], i])
        u["speed"] = int(g.integers(dc["speed"][0], dc["speed"][1] + 1))
        u["pitch"] = int(g.integers(dc["pitch"][0], dc["pitch"][1] + 1))
        u["amplitude"] = int(g.integers(dc["amplitude"][0], dc["amplitude"][1] + 1))
        u["snr_db"] = float(g.uniform(*dc["snr_db"]))
        u["offset"] = float(g.uniform())  # fraction of the clip's slack before the utterance
        u["noise_seed"] = int(g.integers(2**31))
    return plan


def build_synthetic(ctx) -> tuple[list[dict[str, Any]], list[np.ndarray], dict[str, Any]]:
    """Synthesise (or load from the cache) the planned utterances: ``(plan, waves, info)``."""
    dc = ctx.config["data"]
    if shutil.which("espeak-ng") is None:
        raise SystemExit(
            "spoken_digits: the data set is synthesised with espeak-ng, which is not installed. Install it with: "
            "apt-get install -y espeak-ng  (Debian; works offline from the mirror), or run --variant smoke, "
            "which uses the shipped set."
        )
    version = espeak_version()
    # the cache holds the clean utterances: noise, offsets and clip length are applied at load time
    synth = {k: v for k, v in dc.items() if k not in ("snr_db", "clip_seconds", "workers", "source", "path")}
    key = hashlib.sha256(json.dumps([synth, version], sort_keys=True).encode()).hexdigest()[:16]
    cache = ctx.root / "experiments" / ".data" / "spoken_digits" / f"synth-{key}.npz"
    plan = plan_utterances(dc)
    if cache.is_file():
        z = np.load(cache)
        waves = np.split(z["samples"].astype(np.float64) / 32768.0, z["ends"][:-1])
        info = json.loads(str(z["info"]))
        info["cache"] = str(cache.relative_to(ctx.root))
        return plan, waves, info
    t0 = time.perf_counter()

    def one(u: dict[str, Any]) -> np.ndarray:
        voice = f"{u['accent']}+{u['variant']}"
        return synthesise(DIGITS[u["digit"]], voice, u["speed"], u["pitch"], u["amplitude"], dc["rate"])

    with ThreadPoolExecutor(max_workers=dc.get("workers", 4)) as pool:  # espeak-ng runs in subprocesses
        waves = list(pool.map(one, plan))
    seconds = time.perf_counter() - t0
    lengths = np.array([len(w) for w in waves])
    info = {
        "espeak_ng": version,
        "utterances": len(plan),
        "build_seconds": seconds,
        "duration_s": {"mean": float(lengths.mean() / dc["rate"]), "max": float(lengths.max() / dc["rate"])},
    }
    pcm = np.clip(np.round(np.concatenate(waves) * 32768.0), -32768, 32767).astype(np.int16)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(cache, suffix=".npz") as tmp:
        np.savez(tmp, samples=pcm, ends=np.cumsum(lengths), info=json.dumps(info))
    print(f"spoken_digits: synthesised {len(plan)} utterances in {seconds:.1f} s -> {cache}", flush=True)
    waves = np.split(pcm.astype(np.float64) / 32768.0, np.cumsum(lengths)[:-1])
    info["cache"] = str(cache.relative_to(ctx.root))
    return plan, waves, info


def load_shipped(ctx) -> tuple[list[dict[str, Any]], list[np.ndarray], dict[str, Any]]:
    """The tiny set in ``data/smoke/`` (manifest.json + 16-bit WAVs at the data rate): ``(plan, waves, info)``."""
    dc = ctx.config["data"]
    folder = ctx.root / dc["path"]
    manifest = json.loads((folder / "manifest.json").read_text())
    plan, waves = [], []
    for u in manifest["utterances"]:
        x, r = read_wav(folder / u["file"])
        if r != dc["rate"]:
            raise SystemExit(f"spoken_digits: {u['file']} is at {r} Hz, the config wants {dc['rate']}")
        plan.append(u)
        waves.append(x)
    return plan, waves, {"espeak_ng": manifest["espeak_ng"], "utterances": len(plan), "cache": dc["path"]}


def load_allison(ctx) -> list[np.ndarray] | None:
    """The ten real recordings ``0.wav`` .. ``9.wav`` at the data rate, trimmed; ``None`` if not installed
    (an error when ``allison.required``)."""
    ac = ctx.config["allison"]
    folder = Path(ac["path"])
    if not (folder / "0.wav").is_file():
        if ac["required"]:
            raise SystemExit(
                f"spoken_digits: the real test set {folder} is missing. Install it with: apt-get install -y "
                "asterisk-core-sounds-en-wav  (Debian; CC BY-SA 3.0)"
            )
        return None
    out = []
    for d in range(10):
        x, r = read_wav(folder / f"{d}.wav")
        out.append(trim_silence(resample(x, r, ctx.config["data"]["rate"]), ctx.config["data"]["rate"]))
    return out


# ---------------------------------------------------------------------------------------------- features
class LogMel:
    """Clip -> log-mel frames. ``torch.stft`` power spectrum times librosa's mel filterbank (computed once).

    ``__call__(waves [N, L]) -> [T, N, n_mels]`` float32, time first: dB relative to each clip's maximum,
    floored at ``-top_db``, mapped to [0, 1].
    """

    def __init__(self, fc: dict[str, Any], rate: int) -> None:
        import librosa.filters  # only the filterbank (plain numpy); librosa's feature functions are not used

        self.n_fft, self.hop, self.top_db = fc["n_fft"], fc["hop"], fc["top_db"]
        fb = librosa.filters.mel(sr=rate, n_fft=fc["n_fft"], n_mels=fc["n_mels"], fmin=fc["fmin"], fmax=rate / 2)
        self.mel = torch.from_numpy(fb).float()  # [n_mels, n_fft // 2 + 1]
        self.window = torch.hann_window(fc["n_fft"])

    def __call__(self, waves: Tensor) -> Tensor:
        spec = torch.stft(waves, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
        power = spec.real**2 + spec.imag**2  # [N, freq, T]
        db = 10.0 * torch.log10(torch.clamp(torch.einsum("mf,nft->ntm", self.mel, power), min=1e-10))
        top = db.amax(dim=(1, 2), keepdim=True)
        return ((torch.maximum(db, top - self.top_db) - top) / self.top_db + 1.0).transpose(0, 1).contiguous()


def make_clips(waves: list[np.ndarray], plan: list[dict[str, Any]], clip_len: int, lead: int = 0) -> tuple[Tensor, int]:
    """Place each utterance at its offset in a clip of ``clip_len`` samples and add its seeded white noise at
    its SNR (relative to the utterance's mean power). ``lead`` samples of the same noise (and no speech) come
    first: a stream's lead-in. Returns ``(clips [N, lead + clip_len] float32, n_cropped)``."""
    out = np.zeros((len(waves), lead + clip_len))
    cropped = 0
    for i, (x, u) in enumerate(zip(waves, plan, strict=True)):
        if len(x) > clip_len:  # too long for the clip: keep the start (speech onsets carry the digit)
            x, cropped = x[:clip_len], cropped + 1
        start = lead + int(u["offset"] * (clip_len - len(x)))
        out[i, start : start + len(x)] = x
        if u.get("snr_db") is not None:
            g = np.random.default_rng(u["noise_seed"])
            sd = math.sqrt(np.mean(x**2) / 10 ** (u["snr_db"] / 10))
            out[i] += g.normal(0.0, sd, lead + clip_len)
    return torch.from_numpy(out).float(), cropped


def band_limit(clips: Tensor, plan: list[dict[str, Any]], rate: int, ac: dict[str, Any]) -> Tensor:
    """A seeded random channel for each clip (training data only): with probability ``ac["p"]`` a band-pass
    (high-pass corner uniform in ``highpass_hz``, low-pass corner in ``lowpass_hz``, raised-cosine edges an octave
    wide) and a spectral tilt uniform in ``tilt_db_per_octave`` around 1 kHz; seeded by each utterance's noise seed,
    so the set is a pure function of the config. Real microphones and telephone lines colour speech this way."""
    n = clips.shape[1]
    freqs = torch.fft.rfftfreq(n, 1.0 / rate).double().clamp_min(1.0)
    octaves = torch.log2(freqs)
    out = clips.clone()
    for i, u in enumerate(plan):
        g = np.random.default_rng([u["noise_seed"], 7])
        if g.uniform() >= ac["p"]:
            continue
        hp, lp = g.uniform(*ac["highpass_hz"]), g.uniform(*ac["lowpass_hz"])
        tilt = g.uniform(*ac["tilt_db_per_octave"])
        rise = ((octaves - math.log2(hp) + 1.0).clamp(0, 1) * math.pi / 2).sin() ** 2  # 0 an octave below hp
        fall = ((math.log2(lp) - octaves + 1.0).clamp(0, 1) * math.pi / 2).sin() ** 2  # 0 an octave above lp
        gain = rise * fall * 10 ** (tilt * (octaves - math.log2(1000.0)) / 20)
        out[i] = torch.fft.irfft(torch.fft.rfft(clips[i].double()) * gain, n).float()
    return out


def lead_frames(cfg: dict[str, Any]) -> int:
    """Frames of noise-only lead-in before each clip (``[stream] lead_seconds``; 0 without a ``[stream]``)."""
    st = cfg.get("stream")
    return round(st["lead_seconds"] * cfg["data"]["rate"] / cfg["features"]["hop"]) if st else 0


class Hops:
    """Clip -> hops of raw samples ``[T, N, hop]`` (time first), for models with their own front end."""

    def __init__(self, hop: int) -> None:
        self.hop = hop

    def __call__(self, waves: Tensor) -> Tensor:
        n, length = waves.shape
        usable = length - length % self.hop
        return waves[:, :usable].reshape(n, -1, self.hop).transpose(0, 1).contiguous()


def load_data(ctx) -> tuple[dict[str, tuple[Tensor, Tensor]], dict[str, Any]]:
    """``({split: (x [T, N, n_mels], y [N])}, info)`` for train, seen, heldout and (if present) the Allison sets."""
    cfg = ctx.config.data
    dc = cfg["data"]
    plan, waves, info = load_shipped(ctx) if dc["source"] == "shipped" else build_synthetic(ctx)
    clip_len = round(dc["clip_seconds"] * dc["rate"])
    streaming = "stream" in cfg  # raw audio hops (the model computes its own features) after a noise lead-in
    lead = lead_frames(cfg) * cfg["features"]["hop"]
    feats = Hops(cfg["features"]["hop"]) if streaming else LogMel(cfg["features"], dc["rate"])
    sets: dict[str, tuple[Tensor, Tensor]] = {}
    info["cropped"] = 0
    for split in ("train", "seen", "heldout"):
        idx = [i for i, u in enumerate(plan) if u["split"] == split]
        if not idx:
            continue
        clips, cropped = make_clips([waves[i] for i in idx], [plan[i] for i in idx], clip_len, lead)
        if split == "train" and "channel" in cfg:
            clips = band_limit(clips, [plan[i] for i in idx], dc["rate"], cfg["channel"])
        info["cropped"] += cropped
        sets[split] = (feats(clips), torch.tensor([plan[i]["digit"] for i in idx]))
        info[f"{split}_utterances"] = len(idx)
        info[f"{split}_voices"] = sorted({f"{plan[i]['accent']}+{plan[i]['variant']}" for i in idx})
    allison = load_allison(ctx)
    info["allison"] = allison is not None
    if allison is not None:
        ac = cfg["allison"]
        clean = [{"offset": 0.5, "snr_db": None} for _ in range(10)]
        clips, _ = make_clips(allison, clean, clip_len, lead)
        sets["allison"] = (feats(clips), torch.arange(10))
        g = np.random.default_rng([dc["seed"], 10**6])
        noisy_plan = [
            {"offset": g.uniform(), "snr_db": g.uniform(*dc["snr_db"]), "noise_seed": int(g.integers(2**31))}
            for _ in range(ac["noisy_draws"] * 10)
        ]
        clips, _ = make_clips(
            [allison[d] for _ in range(ac["noisy_draws"]) for d in range(10)], noisy_plan, clip_len, lead
        )
        sets["allison_noisy"] = (feats(clips), torch.arange(10).repeat(ac["noisy_draws"]))
    info["frames"] = int(sets["train"][0].shape[0])
    info["lead_frames"] = lead_frames(cfg)
    info["n_mels"] = cfg["features"]["n_mels"]
    info["input"] = "raw audio hops" if streaming else "log-mel frames"
    return sets, info


# ------------------------------------------------------------------------------------------------ models
class MambaBlock(tt.Model):
    """``x + Mamba(RMSNorm(x))``. ``[*, D]`` per step."""

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(d_model)
        self.mixer = ssm.Mamba(d_model, d_state, d_conv, expand)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mixer(self.norm(x))

    def scan(self, x_seq: Tensor) -> Tensor:
        return x_seq + self.mixer.scan(self.norm(x_seq))


def build_model(mc: dict[str, Any], n_mels: int, seed: int, cfg: dict[str, Any] | None = None) -> tt.Model:
    """The ``snn``, ``gru``, ``mamba`` or ``kws`` classifier of ``[models.<part>]`` (seeded init). ``kws`` is the
    zoo's ``snn-keyword-spotter`` on raw audio, its mel filterbank from librosa (``cfg``: the whole config)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    kind, h = mc["kind"], mc["hidden"]
    if kind == "kws":
        import librosa.filters

        fc, rate, st = cfg["features"], cfg["data"]["rate"], cfg["stream"]
        args = {"rate": rate, "n_fft": fc["n_fft"], "hop": fc["hop"], "n_mels": fc["n_mels"], "top_db": fc["top_db"],
                "level_decay": st["level_decay"], "level_floor": 10 ** (st["level_floor_db"] / 10),
                "hidden": h, "layers": mc["layers"],
                "decay_range": mc["decay_range"], "readout_beta": mc["readout_beta"], "labels": list(DIGITS),
                "seed": seed}  # fmt: skip
        model = zoo.build({"architecture": "snn-keyword-spotter", "init_args": args})
        fb = librosa.filters.mel(sr=rate, n_fft=fc["n_fft"], n_mels=fc["n_mels"], fmin=fc["fmin"], fmax=rate / 2)
        model.front.mel.copy_(torch.from_numpy(fb))
        return model
    if kind == "snn":
        # Linear -> blocks x + Linear(DSRLITS(tanh x)) -> Linear (zero init) -> LI readout
        head = nn.Linear(h, 10)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        blocks = [SpikingBlock(h, tuple(mc["decay_range"]), gen) for _ in range(mc["layers"])]
        return FrameClassifier(nn.Linear(n_mels, h), blocks, [head, snn.LI(10, mc["readout_beta"])])
    if kind == "gru":
        layers = [rnn.GRU(n_mels if i == 0 else h, h) for i in range(mc["layers"])]
        return FrameClassifier(layers[0], layers[1:], [nn.Linear(h, 10)])
    if kind == "mamba":
        blocks = [MambaBlock(h, mc["d_state"], mc["d_conv"], mc["expand"]) for _ in range(mc["layers"])]
        return FrameClassifier(nn.Linear(n_mels, h), blocks, [nn.RMSNorm(h), nn.Linear(h, 10)])
    raise SystemExit(f"spoken_digits: unknown model kind {kind!r} (snn, gru, mamba)")


def clip_logits(model: tt.Model, x: Tensor, skip: int = 0) -> Tensor:
    """Fresh states, frames streamed through ``scan``; the clip's logits = the mean over its frames after the
    ``skip`` lead-in frames, ``[B, 10]``."""
    tt.zero_states(model)
    return model.scan(x)[skip:].mean(0)


@torch.no_grad()
def evaluate(model: tt.Model, x: Tensor, y: Tensor, chunk: int = 512, skip: int = 0) -> tuple[float, list[list[int]]]:
    """``(accuracy, confusion [true][predicted])`` on clips ``x [T, N, F]``."""
    was = model.training
    model.eval()
    conf = torch.zeros(10, 10, dtype=torch.long)
    for i in range(0, x.shape[1], chunk):
        pred = clip_logits(model, x[:, i : i + chunk], skip).argmax(-1)
        conf.index_put_((y[i : i + chunk], pred), torch.ones_like(pred), accumulate=True)
    tt.zero_states(model)
    model.train(was)
    return conf.diag().sum().item() / max(1, x.shape[1]), conf.tolist()


@torch.no_grad()
def stream_check(model: tt.Model, x: Tensor, skip: int = 0) -> dict[str, float]:
    """Frame-by-frame stepping vs ``scan`` on the same clips: max |logit difference|, prediction agreement."""
    model.eval()
    ref = clip_logits(model, x, skip)
    tt.zero_states(model)
    step = torch.stack([model(frame) for frame in x.unbind(0)])[skip:].mean(0)
    tt.zero_states(model)
    model.train()
    return {
        "max_abs_diff": (step - ref).abs().max().item(),
        "same_predictions": bool((step.argmax(-1) == ref.argmax(-1)).all()),
    }


# ---------------------------------------------------------------------------------------------- training
def batch_indices(step: int, n: int, batch: int, seed: int) -> Tensor:
    """Shuffled epochs (a fresh seeded permutation per epoch); a pure function of ``step`` for resuming."""
    per_epoch = n // batch
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(10**4 * seed + epoch))
    return perm[k * batch : (k + 1) * batch]


def train_seed(ctx, part: str, seed: int, sets: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Any] | None:
    """Train one (part, seed), resuming from its checkpoints; its result (saved in the run dir) or ``None``."""
    cfg = ctx.config.data
    tc = cfg["train"]
    name = f"{part}/seed{seed}"
    done = ctx.run_dir / part / f"seed{seed}" / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    x_tr, y_tr = sets["train"]
    skip = lead_frames(cfg)
    model = build_model(cfg["models"][part], cfg["features"]["n_mels"], seed, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=tc["lr"], weight_decay=tc["weight_decay"])
    trainer = Trainer(ctx, name, model, opt, total_steps=tc["steps"], checkpoint_every=tc["checkpoint_every"])
    trainer.resume()
    params = list(model.parameters())
    running: list[tuple[float, float]] = []
    for step in trainer.steps():
        idx = batch_indices(step, x_tr.shape[1], tc["batch"], seed)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        logits = clip_logits(model, x_tr[:, idx], skip)
        loss = F.cross_entropy(logits, y_tr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, tc["clip"])
        opt.step()
        running.append((loss.item(), (logits.argmax(-1) == y_tr[idx]).float().mean().item()))
        if (step + 1) % tc["log_every"] == 0 or step + 1 == tc["steps"]:
            row = {"train_loss": sum(r[0] for r in running) / len(running),
                   "train_acc": sum(r[1] for r in running) / len(running), "grad_norm": float(gnorm)}  # fmt: skip
            running.clear()
            if (step + 1) % tc["eval_every"] == 0 or step + 1 == tc["steps"]:
                row["heldout_acc"] = evaluate(model, *sets["heldout"], skip=skip)[0]
                if "allison" in sets:
                    row["allison_acc"] = evaluate(model, *sets["allison"], skip=skip)[0]
            trainer.log(step, **row)
    if not trainer.done:
        return None
    result: dict[str, Any] = {"seed": seed, "num_parameters": sum(p.numel() for p in model.parameters())}
    for split in ("seen", "heldout", "allison", "allison_noisy"):
        if split in sets:
            acc, conf = evaluate(model, *sets[split], skip=skip)
            result[f"{split}_acc"] = acc
            result[f"{split}_confusion"] = conf
    result["stream_check"] = stream_check(model, sets["heldout"][0][:, : cfg["eval"]["stream_check_clips"]], skip)
    result["wall_seconds"] = trainer.extra["wall_seconds"]
    result["seconds_per_step"] = trainer.extra["wall_seconds"] / tc["steps"]
    result["history"] = trainer.history
    write_weights(model, done.with_name("model.safetensors"))
    write_json(done, result)  # written last: "done" means the weights are complete
    return result


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sd and per-seed values of each accuracy; confusion matrices summed over seeds."""
    out: dict[str, Any] = {"num_parameters": seeds[0]["num_parameters"], "seeds": [s["seed"] for s in seeds]}
    for split in ("seen", "heldout", "allison", "allison_noisy"):
        key = f"{split}_acc"
        if key not in seeds[0]:
            continue
        vals = [s[key] for s in seeds]
        mean = sum(vals) / len(vals)
        sd = (sum((v - mean) ** 2 for v in vals) / max(1, len(vals) - 1)) ** 0.5
        out[split] = {"mean": mean, "std": sd, "per_seed": vals}
        out[f"{split}_confusion"] = np.sum([s[f"{split}_confusion"] for s in seeds], axis=0).tolist()
    out["stream_check_max_abs_diff"] = max(s["stream_check"]["max_abs_diff"] for s in seeds)
    out["stream_check_same_predictions"] = all(s["stream_check"]["same_predictions"] for s in seeds)
    out["train_loss_final"] = sum(s["history"][-1]["train_loss"] for s in seeds) / len(seeds)
    out["wall_seconds"] = sum(s["wall_seconds"] for s in seeds)
    out["seconds_per_step"] = sum(s["seconds_per_step"] for s in seeds) / len(seeds)
    out["histories"] = [s["history"] for s in seeds]
    return out


# ---------------------------------------------------------------------------------------------- ttexp API
def parts(ctx) -> list[str]:
    """The models this experiment trains (each can run in its own process)."""
    return list(ctx.config["models"])


def run(ctx) -> dict[str, Any] | None:
    """Train every wanted part for every seed; return the results once all are done (``None`` until then)."""
    names = parts(ctx)
    sets, info = load_data(ctx)
    models: dict[str, Any] = {}
    for part in names:
        done = [ctx.run_dir / part / f"seed{s}" / "result.json" for s in ctx.config["seeds"]]
        if ctx.wants(part):
            per_seed = [train_seed(ctx, part, s, sets) for s in ctx.config["seeds"]]
        else:
            per_seed = [json.loads(p.read_text()) if p.is_file() else None for p in done]
        if all(r is not None for r in per_seed):
            models[part] = summarise(per_seed)
    missing = [p for p in names if p not in models]
    if missing:
        print(f"spoken_digits: parts not finished yet: {missing}; results are written once all are done")
        return None
    return {"data": info, "models": models, "main": ctx.config["main"], "chance": 0.1}


# ---------------------------------------------------------------------------------------------- reporting
def _acc(r: dict[str, Any], split: str) -> str:
    if split not in r:
        return "-"
    s = r[split]
    return f"{s['mean']:.3f} +- {s['std']:.3f}" if len(s["per_seed"]) > 1 else f"{s['mean']:.3f}"


def table(results: dict[str, Any]) -> str:
    """Markdown results (generated from results.json; do not edit by hand)."""
    cfg, d, prov = results["config"], results["data"], results["provenance"]
    dc = cfg["data"]
    lines = [
        *table_header(results, "spoken_digits"),
        f"Data: spoken digits synthesised by {d['espeak_ng'].split('Data at')[0].strip()} "
        + ("" if dc["source"] == "espeak" else f"(the shipped set `{dc['path']}`) ")
        + f"({d['utterances']} utterances, {dc['rate']} Hz, {d['frames']} frames x {d['n_mels']} log-mel bins per "
        f"clip, {cfg['features']['hop'] / dc['rate'] * 1000:.0f} ms per frame, {d['cropped']} clips cut to "
        f"{dc['clip_seconds']} s); train {d.get('train_utterances', 0)} utterances from "
        f"{len(d.get('train_voices', []))} voices; held-out {d.get('heldout_utterances', 0)} from "
        f"{len(d.get('heldout_voices', []))} voices never trained on ("
        + (
            f"every voice with an accent in {dc['heldout_accents']} or a variant in {dc['heldout_variants']}"
            if dc["source"] == "espeak"
            else ", ".join(d.get("heldout_voices", []))
        )
        + f"); seen = {d.get('seen_utterances', 0)} new utterances of the training voices. Allison = the 10 real "
        "recorded digits of Debian `asterisk-core-sounds-en-wav` (clean), "
        f"Allison + noise = the same x {cfg['allison']['noisy_draws']} noise draws"
        + ("" if d["allison"] else " (not installed on this machine: not evaluated)")
        + ".",
        "",
        f"Test accuracy (mean +- sd over seeds {cfg['seeds']}; chance {results['chance']:.1f}); clip logits = mean "
        "of the per-frame readout over frames:",
        "",
        "| model | parameters | held-out voices | seen voices | Allison (real, 10) | Allison + noise | s/step | "
        "train time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for part, r in results["models"].items():
        star = " (main)" if part == results["main"] else ""
        lines.append(
            f"| {part}{star} | {r['num_parameters']:,} | **{_acc(r, 'heldout')}** | {_acc(r, 'seen')} | "
            f"{_acc(r, 'allison')} | {_acc(r, 'allison_noisy')} | {r['seconds_per_step']:.3f} | "
            f"{r['wall_seconds'] / 60:.1f} min |"
        )
    lines += [
        "",
        "The original traceTorch audio example (BirdCLEF+ 2026, 234 bird classes, macro ROC-AUC) recorded no "
        "number, so there is none to show beside these.",
        "",
        "Frame-by-frame stepping vs `scan` (max |logit difference| over the checked clips): "
        + ", ".join(
            f"{p} {r['stream_check_max_abs_diff']:.1e}"
            + ("" if r["stream_check_same_predictions"] else " (predictions differ!)")
            for p, r in results["models"].items()
        )
        + ".",
        "",
        "Training: " + ", ".join(f"{k}={v}" for k, v in cfg["train"].items() if not isinstance(v, list)),
        "",
        provenance_line(prov),
        "",
    ]
    return "\n".join(lines)


def plots(results: dict[str, Any], out: Path) -> None:
    """``curves.png`` (training loss and held-out accuracy against steps, every seed) and ``confusion.png``
    (held-out confusion matrices, summed over seeds, one panel per model)."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (part, r) in enumerate(results["models"].items()):
        for j, h in enumerate(r["histories"]):
            label = part if j == 0 else None
            ax1.plot(
                [row["step"] for row in h], [row["train_loss"] for row in h], color=f"C{i}", alpha=0.7, label=label
            )
            ev = [row for row in h if "heldout_acc" in row]
            ax2.plot([row["step"] for row in ev], [row["heldout_acc"] for row in ev], "o-", ms=3, color=f"C{i}",
                     alpha=0.7, label=label)  # fmt: skip
            al = [row for row in h if "allison_acc" in row]
            if al:
                ax2.plot([row["step"] for row in al], [row["allison_acc"] for row in al], "x:", ms=4,
                         color=f"C{i}", alpha=0.5, label=f"{part} (Allison)" if j == 0 else None)  # fmt: skip
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss (cross-entropy)")
    ax1.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("test accuracy")
    ax2.axhline(results["chance"], color="gray", ls="--", lw=0.8)
    ax2.set_ylim(0, 1)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"spoken_digits {results['version']}: held-out voices (o) and Allison, real (x)")
    fig.tight_layout()
    save_figure(fig, out / "curves.png")
    n = len(results["models"])
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.6), squeeze=False)
    for ax, (part, r) in zip(axes[0], results["models"].items(), strict=True):
        conf = np.array(r["heldout_confusion"], dtype=float)
        conf /= np.maximum(conf.sum(1, keepdims=True), 1)
        ax.imshow(conf, vmin=0, vmax=1, cmap="Blues")
        ax.set_title(f"{part}: held-out {r['heldout']['mean']:.3f}", fontsize=9)
        ax.set_xticks(range(10), [w[:3] for w in DIGITS], rotation=90, fontsize=7)
        ax.set_yticks(range(10), [w[:3] for w in DIGITS], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("spoken")
    fig.tight_layout()
    save_figure(fig, out / "confusion.png")


# ---------------------------------------------------------------------------------------------- publishing
def publish(ctx, *, endpoint=None, local_hub=None, repo_id=None, registry_dir=None) -> Path:
    """Publish seed ``seeds[0]`` of the main (``kws``) part as the entry in ``[publish]``.

    Snapshot ``noise``: the states after ``noise_seconds`` of white noise of standard deviation ``noise_sd``
    (batch 1): the front end's loudness level and every membrane settled on background, so a stream that starts
    from it classifies its first word as well as one that has been listening for a while. Golden tensors: the
    first ``golden_frames`` hops of the first ``golden_clips`` held-out clips."""
    from safetensors.torch import load_file

    from ttexp.publishing import finished_results, publish_entry

    pc, cfg = ctx.config["publish"], ctx.config.data
    results = finished_results(ctx)
    part, seed = results["main"], cfg["seeds"][0]
    if cfg["models"][part]["kind"] != "kws":
        raise SystemExit(f"spoken_digits publish: part {part!r} is not a 'kws' model (v2 and later publish)")
    sets, _ = load_data(ctx)
    model = build_model(cfg["models"][part], cfg["features"]["n_mels"], seed, cfg)
    model.load_state_dict(load_file(str(ctx.run_dir / part / f"seed{seed}" / "model.safetensors")))
    model.eval()
    hop, rate = cfg["features"]["hop"], cfg["data"]["rate"]
    n_noise = round(pc["noise_seconds"] * rate / hop) * hop
    noise = torch.randn(1, n_noise, generator=torch.Generator().manual_seed(ctx.seed)) * pc["noise_sd"]
    tt.zero_states(model)
    with torch.no_grad():
        model.scan(model.frames(noise))
    snapshot = model.save_states()
    tt.zero_states(model)
    golden = sets["heldout"][0][: pc["golden_frames"], : pc["golden_clips"]].contiguous()
    r = results["models"][part]
    synth = {
        "id": "espeak-ng-spoken-digits",
        "name": f"spoken digits synthesised by espeak-ng ({ctx.name} {ctx.version})",
    }
    allison = {"id": "asterisk-core-sounds-en-wav", "name": "Allison's recorded digits (asterisk-core-sounds-en-wav)"}
    metrics = [("held-out voices accuracy", "heldout", synth, "held-out voices")]
    metrics += [("real recordings accuracy", "allison", allison, "10 clean digits")]
    metrics += [("real recordings + noise accuracy", "allison_noisy", allison, "10 digits x noise draws")]
    metrics += [("seen voices accuracy", "seen", synth, "new utterances of the training voices")]
    metrics = [
        {"name": name, "type": "accuracy", "value": round(r[key]["mean"], 4), "dataset": ds, "split": split,
         "task": "audio-classification"}
        for name, key, ds, split in metrics
        if key in r
    ]  # fmt: skip
    usage = "\n".join([
        "import torch",
        "import tracetorch_zoo as zoo",
        "",
        f'model = zoo.load("{pc["name"]}", states="noise")  # warm: it has listened to background noise',
        f"audio = torch.zeros(1, {rate})  # one second of a {rate} Hz microphone, samples in [-1, 1]",
        "with torch.no_grad():",
        "    running = torch.zeros(1, len(model.labels))",
        "    for t, hop in enumerate(model.frames(audio).unbind(0), 1):  # [1, 128] samples per 16 ms step",
        "        running += (model(hop) - running) / t  # running mean of the per-frame logits",
        "print(model.labels[running.argmax(-1).item()])",
    ])  # fmt: skip
    metadata = {
        "name": pc["name"],
        "experiment": ctx.name,
        "version": ctx.version,
        "dataset": synth["name"],
        "task": "audio-classification",
        "license": "mit",
        "data_license": "synthetic speech made by espeak-ng (GPL-3 program; its output is ours, MIT); real test "
        "recordings: asterisk-core-sounds-en (CC BY-SA 3.0), used for testing only",
        "metrics": metrics,
        "git_sha": results["provenance"]["git"]["sha"],
        "labels": list(DIGITS),
        "usage": usage,
        "description": (
            f"A streaming spiking keyword spotter for the ten spoken digits ({r['num_parameters']:,} parameters), "
            f"trained by experiment {ctx.name} {ctx.version}. It reads raw {rate} Hz audio one {hop}-sample hop "
            f"({hop / rate * 1000:.0f} ms) per step: a log-mel front end normalised by a running loudness level, "
            "then three residual blocks of dual ternary spiking neurons (DSRLITS) and a leaky-integrator readout. "
            "Every piece of memory is a hidden state, so it listens in constant memory."
        ),
        "intended_use": "Recognising isolated spoken English digits ('zero' .. 'nine') in a stream, frame by frame; "
        "a compact example of a streaming SNN with a warm-start snapshot.",
        "limitations": "Trained on synthetic speech only (espeak-ng voices): accuracy on real voices is much lower "
        "(see the real-recordings metrics, one speaker). Ten words, no 'unknown' or silence class.",
    }
    noise_info = {
        "meaning": f"states after {n_noise / rate:.3f} s of white noise (sd {pc['noise_sd']}), batch 1: the "
        "loudness level and membranes settled on background, so a stream starts warm",
        "steps_consumed": str(n_noise // hop),
    }
    return publish_entry(
        ctx, model, results, r | {"histories": []}, pc=pc,
        snapshot=("noise", snapshot, noise_info), golden_inputs=golden, metadata=metadata,
        license=metadata["data_license"] + "; weights MIT",
        endpoint=endpoint, local_hub=local_hub, repo_id=repo_id, registry_dir=registry_dir,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- smoke set
def make_smoke_set(config_path: Path = HERE / "v1" / "config.toml") -> None:
    """Write ``data/smoke/``: one utterance of every digit for each voice in ``[smoke_set]`` of the full
    config, synthesised (clean, trimmed, at the data rate) with the seeded speed/pitch/amplitude draws of the
    full data config; noise and offsets are added at load time from the manifest."""
    import tomllib

    cfg = tomllib.loads(config_path.read_text())
    dc, sc = cfg["data"], cfg["smoke_set"]
    SMOKE_DIR.mkdir(parents=True, exist_ok=True)
    for old in SMOKE_DIR.glob("*.wav"):
        old.unlink()
    utts = []
    for split, voices in (("train", sc["train_voices"]), ("heldout", sc["heldout_voices"])):
        for voice in voices:
            for d in range(10):
                g = np.random.default_rng([sc["seed"], len(utts)])
                u = {"split": split, "accent": voice.split("+")[0], "variant": voice.split("+")[1], "digit": d,
                     "speed": int(g.integers(dc["speed"][0], dc["speed"][1] + 1)),
                     "pitch": int(g.integers(dc["pitch"][0], dc["pitch"][1] + 1)),
                     "amplitude": int(g.integers(dc["amplitude"][0], dc["amplitude"][1] + 1)),
                     "snr_db": float(g.uniform(*dc["snr_db"])), "offset": float(g.uniform()),
                     "noise_seed": int(g.integers(2**31))}  # fmt: skip
                x = synthesise(DIGITS[d], voice, u["speed"], u["pitch"], u["amplitude"], dc["rate"])
                u["file"] = f"{split}-{voice.replace('+', '_')}-{d}.wav"
                write_wav(SMOKE_DIR / u["file"], x, dc["rate"])
                utts.append(u)
    manifest = {"espeak_ng": espeak_version(), "rate": dc["rate"], "made_by": "experiment.py make-smoke-set",
                "utterances": utts}  # fmt: skip
    write_json(SMOKE_DIR / "manifest.json", manifest)
    total = sum(p.stat().st_size for p in SMOKE_DIR.iterdir())
    print(f"wrote {len(utts)} utterances to {SMOKE_DIR} ({total / 1024:.0f} KiB)")


if __name__ == "__main__" and sys.argv[1:] == ["make-smoke-set"]:
    make_smoke_set()
