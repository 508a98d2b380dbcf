//! Kinematics benchmarks: `cargo bench -p reachy-kinematics --bench kinematics`.
//!
//! - `fk/r_arm`: forward kinematics of the 7-DoF arm.
//! - `fk_jacobian/r_arm`: FK plus the geometric Jacobian.
//! - `ik/r_arm_1000_targets`: IK on 1000 random reachable targets (FK of random joint vectors
//!   within limits), seed at mid-range, tolerance 1e-5 m / 1e-5 rad; the time is for all 1000,
//!   divide by 1000 for the mean. The success rate and iteration counts are printed first.
// criterion_group! defines a public function without docs
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use reachy_kinematics::model::RobotModel;
use reachy_kinematics::{solve, Chain, Frame, IkOptions, IkTarget, JointVec, MAX_DOF};

fn targets(chain: &Chain, n: usize) -> Vec<Frame> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(2024);
    (0..n)
        .map(|_| {
            let mut q = [0.0; MAX_DOF];
            for i in 0..chain.dof() {
                q[i] = rng.gen_range(chain.lower()[i]..=chain.upper()[i]);
            }
            chain.fk(&q)
        })
        .collect()
}

fn ik_report(chain: &Chain, goals: &[Frame]) {
    let opts = IkOptions::default();
    let seed = chain.mid_range();
    let t0 = Instant::now();
    let mut ok = 0;
    let mut iters = 0u64;
    let mut restarts = 0u64;
    for g in goals {
        let s = solve(chain, &IkTarget::Pose(*g), &seed, &opts);
        ok += s.ok as usize;
        iters += s.iters as u64;
        restarts += s.restarts as u64;
    }
    let dt = t0.elapsed();
    eprintln!(
        "ik {}: {}/{} solved ({:.2} %), mean {:.1} µs, mean {:.1} iterations, {:.2} restarts",
        chain.name(),
        ok,
        goals.len(),
        100.0 * ok as f64 / goals.len() as f64,
        dt.as_secs_f64() * 1e6 / goals.len() as f64,
        iters as f64 / goals.len() as f64,
        restarts as f64 / goals.len() as f64,
    );
}

fn bench(c: &mut Criterion) {
    let model = RobotModel::reachy().expect("built-in URDF");
    let arm = model.chain("r_arm").expect("r_arm");
    let q: JointVec = [0.3, -0.9, 0.2, -1.1, 0.1, -0.2, 0.4, 0.0];
    c.bench_function("fk/r_arm", |b| b.iter(|| arm.fk(black_box(&q))));
    c.bench_function("fk_jacobian/r_arm", |b| {
        b.iter(|| arm.fk_jacobian(black_box(&q)))
    });
    let goals = targets(arm, 1000);
    ik_report(arm, &goals);
    ik_report(
        model.chain("l_arm").expect("l_arm"),
        &targets(model.chain("l_arm").expect("l_arm"), 1000),
    );
    let opts = IkOptions::default();
    let seed = arm.mid_range();
    let mut g = c.benchmark_group("ik");
    g.sample_size(10);
    g.bench_function("r_arm_1000_targets", |b| {
        b.iter(|| {
            let mut ok = 0;
            for t in &goals {
                ok += solve(arm, &IkTarget::Pose(*t), &seed, &opts).ok as usize;
            }
            black_box(ok)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
