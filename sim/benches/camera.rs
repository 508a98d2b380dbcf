//! Camera render time: the three cameras (head and both wrists) of the default scene, one frame
//! each, read back to RGB8 — on whatever adapter wgpu picks (a GPU, else Mesa's lavapipe).
//!
//! `cargo bench -p reachy-sim --bench camera`
// criterion_group! defines a public function without docs
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use reachy_sim::camera::CameraSpec;
use reachy_sim::world::{World, WorldConfig};

fn bench(c: &mut Criterion) {
    for (w, h) in [(640, 480), (320, 240)] {
        let mut cfg = WorldConfig::new(include_str!("../../urdf/reachy.urdf"));
        cfg.cameras = CameraSpec::reachy(w, h);
        let mut world = match World::new(cfg) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("camera bench skipped: {e}");
                return;
            }
        };
        eprintln!("adapter: {}", world.renderer_info().unwrap_or_default());
        let mut g = c.benchmark_group("cameras");
        g.sample_size(20);
        g.bench_function(format!("3 cameras {w}x{h}"), |b| {
            b.iter(|| {
                world.advance(0.001);
                world.render().unwrap()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
