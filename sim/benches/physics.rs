//! Physics benchmark: `cargo bench -p reachy-sim --bench physics`.
//!
//! `physics/step_1khz_moving`: one 1 ms step of the whole robot (21 actuated joints, multibody,
//! gravity, motors, both shoulders moving) on one thread; real-time factor = 1 ms ÷ this time. With
//! `MUJOCO_PYTHON=/abs/path/to/python` (a Python with `mujoco`), MuJoCo's step on the same URDF is
//! timed in the same run and printed.
// criterion_group! defines a public function without docs
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use reachy_sim::physics::{home_pose, RobotPhysics};

const URDF: &str = include_str!("../../urdf/reachy.urdf");

fn mujoco() {
    let Ok(py) = std::env::var("MUJOCO_PYTHON") else {
        eprintln!("MuJoCo comparison: set MUJOCO_PYTHON to a Python with `pip install mujoco`");
        return;
    };
    let script = r#"
import sys, time, mujoco
m = mujoco.MjModel.from_xml_path(sys.argv[1])
m.opt.timestep = 0.001
d = mujoco.MjData(m)
for _ in range(1000): mujoco.mj_step(m, d)
n = 20000
t0 = time.perf_counter()
for _ in range(n): mujoco.mj_step(m, d)
dt = (time.perf_counter() - t0) / n
print(f"mujoco {mujoco.__version__}: {dt*1e6:.2f} us/step, real-time factor {1e-3/dt:.0f}x ({m.nq} dofs, {m.nbody} bodies)")
"#;
    let urdf = concat!(env!("CARGO_MANIFEST_DIR"), "/../urdf/reachy.urdf");
    match std::process::Command::new(py)
        .args(["-c", script, urdf])
        .output()
    {
        Ok(o) if o.status.success() => eprint!("{}", String::from_utf8_lossy(&o.stdout)),
        Ok(o) => eprintln!(
            "MuJoCo comparison failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("MuJoCo comparison failed: {e}"),
    }
}

fn bench(c: &mut Criterion) {
    let mut p = RobotPhysics::from_urdf_str(URDF, 0.001).expect("URDF");
    let q = home_pose(&p.joint_names());
    let timed = |label: &str, p: &mut RobotPhysics, f: &dyn Fn(usize, &mut Vec<f32>)| {
        let mut q = q.clone();
        let t0 = Instant::now();
        for k in 0..4000 {
            f(k, &mut q);
            p.set_targets(&q).expect("targets");
            p.step();
        }
        let dt = t0.elapsed().as_secs_f64() / 4000.0;
        eprintln!(
            "rapier, {label}: {:.2} us/step, real-time factor {:.0}x",
            dt * 1e6,
            1e-3 / dt
        );
    };
    timed("swinging from zero to the home pose", &mut p, &|_, _| {});
    timed("holding the home pose", &mut p, &|_, _| {});
    timed("both shoulders +-1 rad at 1 Hz", &mut p, &|k, q| {
        q[0] = (k as f32 * 0.001 * std::f32::consts::TAU).sin();
        q[8] = -q[0];
    });
    mujoco();
    // keep the robot moving (a resting multibody gets cheaper steps)
    let mut q = q;
    let mut k = 0u64;
    c.bench_function("physics/step_1khz_moving", |b| {
        b.iter(|| {
            k += 1;
            q[0] = (k as f32 * 0.001 * std::f32::consts::TAU).sin();
            q[8] = -q[0];
            p.set_targets(&q).expect("targets");
            black_box(&mut p).step()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
