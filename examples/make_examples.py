"""Regenerate the example inputs in this folder (all made for this repository; no third-party media).

    python examples/make_examples.py            # needs Pillow; the speech clip also needs espeak-ng and sox

chart.png        a bar chart drawn with Pillow (palette PNG)
scene.jpg        a drawn landscape: sky, sun, clouds, a house, a tree (JPEG)
rotated_note.jpg a handwritten-style note stored sideways with EXIF orientation 6 (shows EXIF handling)
speech.ogg       a short English sentence spoken by espeak-ng, converted by sox to 16 kHz mono Ogg Vorbis
bouncing_ball.mp4 4 s, 160×120, 10 fps: a red ball bouncing left to right over a green field while a blue
                 square slides down; a 440 Hz beep on the audio track each time the ball hits the ground (PyAV)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
SENTENCE = "The red bar for March is the highest. Sales doubled between January and March."


def font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at a size (no system fonts needed)."""
    return ImageFont.load_default(size=size)


def chart(path: Path) -> None:
    """Monthly sales bar chart, 640×480, with a title, axis labels and values."""
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun"]
    sales = [42, 55, 84, 61, 47, 70]
    colors = [(70, 110, 200)] * 6
    colors[2] = (210, 50, 50)  # the highest bar is red
    im = Image.new("RGB", (640, 480), "white")
    d = ImageDraw.Draw(im)
    d.text((320, 24), "Monthly sales (units)", fill="black", font=font(26), anchor="mm")
    left, bottom, top, right = 70, 420, 70, 610
    d.line([(left, top), (left, bottom), (right, bottom)], fill="black", width=2)
    for v in range(0, 101, 20):
        y = bottom - (bottom - top) * v / 100
        d.line([(left - 6, y), (left, y)], fill="black", width=2)
        d.text((left - 10, y), str(v), fill="black", font=font(16), anchor="rm")
        if v:
            d.line([(left + 1, y), (right, y)], fill=(225, 225, 225), width=1)
    step = (right - left) / len(months)
    for i, (m, s) in enumerate(zip(months, sales)):
        x0 = left + i * step + 14
        x1 = x0 + step - 28
        y = bottom - (bottom - top) * s / 100
        d.rectangle([x0, y, x1, bottom - 1], fill=colors[i])
        d.text(((x0 + x1) / 2, y - 12), str(s), fill="black", font=font(16), anchor="mm")
        d.text(((x0 + x1) / 2, bottom + 18), m, fill="black", font=font(18), anchor="mm")
    im.quantize(colors=32).save(path, optimize=True)


def scene(path: Path) -> None:
    """A simple landscape, 800×600: sky gradient, sun, clouds, hills, a house and a tree."""
    im = Image.new("RGB", (800, 600))
    d = ImageDraw.Draw(im)
    for y in range(600):  # sky gradient, light near the horizon
        t = y / 600
        d.line([(0, y), (800, y)], fill=(int(90 + 120 * t), int(150 + 80 * t), int(235 - 10 * t)))
    d.ellipse([620, 50, 720, 150], fill=(255, 215, 60))
    for cx, cy in [(160, 110), (400, 80)]:
        for dx, dy, r in [(0, 0, 38), (40, -12, 45), (85, 0, 36)]:
            d.ellipse([cx + dx - r, cy + dy - r, cx + dx + r, cy + dy + r], fill=(250, 250, 252))
    d.ellipse([-200, 380, 600, 800], fill=(80, 160, 70))
    d.ellipse([300, 400, 1100, 850], fill=(60, 140, 60))
    d.rectangle([0, 520, 800, 600], fill=(70, 150, 65))
    d.rectangle([250, 360, 450, 520], fill=(200, 70, 60))  # house
    d.polygon([(230, 365), (350, 270), (470, 365)], fill=(120, 60, 40))
    d.rectangle([330, 440, 375, 520], fill=(90, 55, 30))
    d.rectangle([275, 395, 315, 430], fill=(190, 225, 250))
    d.rectangle([390, 395, 430, 430], fill=(190, 225, 250))
    d.rectangle([600, 400, 625, 530], fill=(110, 70, 40))  # tree
    d.ellipse([545, 300, 680, 430], fill=(40, 120, 45))
    im.save(path, quality=80, optimize=True)


def rotated_note(path: Path) -> None:
    """A portrait note stored rotated by 90° with EXIF orientation 6, as phone cameras do."""
    upright = Image.new("RGB", (360, 480), (255, 250, 215))
    d = ImageDraw.Draw(upright)
    d.text((180, 60), "SHOPPING", fill=(30, 30, 120), font=font(34), anchor="mm")
    for i, item in enumerate(["3 apples", "bread", "milk", "2 lemons"]):
        d.text((50, 140 + i * 70), f"- {item}", fill=(20, 20, 20), font=font(30))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # a viewer applying orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, quality=80, optimize=True, exif=exif)


def speech(path: Path) -> None:
    """Speak SENTENCE with espeak-ng and convert it with sox to 16 kHz mono Ogg Vorbis."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (apt-get install espeak-ng sox libsox-fmt-all)")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), SENTENCE], check=True)
        subprocess.run(["sox", str(wav), "-r", "16000", "-c", "1", "-C", "3", str(path)], check=True)


def ball_frame(i: int, width: int = 160, height: int = 120) -> tuple[Image.Image, bool]:
    """Frame ``i`` of the clip and whether the ball touches the ground in it."""
    im = Image.new("RGB", (width, height), (150, 200, 250))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 90, width, height], fill=(70, 150, 65))
    x = 10 + i * 3.5
    bounce = abs(((i % 10) - 5) / 5)  # 1 at the top, 0 on the ground, every 10 frames
    y = 80 - 60 * (1 - bounce**2)
    d.ellipse([x - 8, y - 8, x + 8, y + 8], fill=(220, 30, 30))
    top = 5 + i * 1.5
    d.rectangle([120, top, 140, top + 20], fill=(30, 60, 200))
    return im, i % 10 == 5


def bouncing_ball(path: Path, frames: int = 40, fps: int = 10, rate: int = 16000) -> None:
    """Encode the clip with PyAV (H.264 + AAC) — the audio track beeps when the ball lands."""
    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "32", "preset": "veryslow"})
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        sound = out.add_stream("aac", rate=rate, options={"b": "12k"})
        sound.layout = "mono"
        wave = np.zeros(frames * rate // fps, np.float32)
        for i in range(frames):
            im, lands = ball_frame(i)
            if lands:
                t = np.arange(rate // 10) / rate
                wave[i * rate // fps : i * rate // fps + t.size] = 0.4 * np.sin(2 * np.pi * 440 * t)
            for packet in video.encode(av.VideoFrame.from_image(im)):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        frame = av.AudioFrame.from_ndarray(wave[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*sound.encode(frame), *sound.encode()]:
            out.mux(packet)


def main() -> None:
    """Write every example into this folder."""
    chart(HERE / "chart.png")
    scene(HERE / "scene.jpg")
    rotated_note(HERE / "rotated_note.jpg")
    bouncing_ball(HERE / "bouncing_ball.mp4")
    speech(HERE / "speech.ogg")
    for p in sorted(HERE.iterdir()):
        if p.suffix in {".png", ".jpg", ".ogg", ".mp4"}:
            print(f"{p.name:18s} {p.stat().st_size / 1024:6.1f} KB")


if __name__ == "__main__":
    main()
