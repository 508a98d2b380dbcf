//! The recorder's encoder alone on given frames: `REACHY_BENCH_RAW` (rgb8 frames one after
//! another), `REACHY_BENCH_SIZE` (`WxH`), `REACHY_BENCH_FPS` (default 30). Prints one JSON line:
//! frames, seconds, frames per second and × real time, bytes. `record_bench.sh` runs it beside
//! lerobot's encoder on the same frames.
#![allow(missing_docs)]

fn main() {
    let Ok(raw) = std::env::var("REACHY_BENCH_RAW") else {
        eprintln!("encode bench: set REACHY_BENCH_RAW and REACHY_BENCH_SIZE (see record_bench.sh)");
        return;
    };
    let size = std::env::var("REACHY_BENCH_SIZE").unwrap_or_else(|_| "640x480".into());
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .expect("REACHY_BENCH_SIZE as WxH");
    let fps: u32 = std::env::var("REACHY_BENCH_FPS")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(30);
    let bytes = std::fs::read(&raw).expect("reading the frames");
    let frame = (w * h * 3) as usize;
    let frames: Vec<&[u8]> = bytes.chunks_exact(frame).collect();
    let out = std::env::temp_dir().join(format!("reachy-encode-bench-{}.mp4", std::process::id()));
    let t0 = std::time::Instant::now();
    let mut v = reachy_dataset::video::VideoWriter::create(
        &out,
        w,
        h,
        fps,
        reachy_dataset::VideoOptions::default(),
    )
    .expect("starting the encoder");
    for f in &frames {
        v.push(f).expect("encoding");
    }
    let s = v.finish().expect("finishing");
    let secs = t0.elapsed().as_secs_f64();
    std::fs::remove_file(&out).ok();
    println!(
        "{}",
        serde_json::json!({
            "encoder": "reachy openh264",
            "frames": frames.len(),
            "seconds": secs,
            "fps": frames.len() as f64 / secs,
            "x_realtime": frames.len() as f64 / fps as f64 / secs,
            "bytes": s.bytes,
        })
    );
}
