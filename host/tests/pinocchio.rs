//! Forward kinematics cross-checked against Pinocchio (`pip install pin`) to 1e-9 on random
//! configurations of every chain.

use crate::common;

use rand::{Rng, SeedableRng};
use reachy_kinematics::model::RobotModel;
use reachy_kinematics::MAX_DOF;
use serde_json::json;

#[test]
fn fk_equals_pinocchio_on_every_chain() {
    let Some(py) = common::python_with("pinocchio", "pin") else {
        return;
    };
    let urdf = common::repo_root().join("urdf/reachy.urdf");
    let model = RobotModel::from_urdf_file(&urdf).unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(99);
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for chain in &model.chains {
        for _ in 0..200 {
            let mut q = [0.0; MAX_DOF];
            for i in 0..chain.dof() {
                q[i] = rng.gen_range(chain.lower()[i]..=chain.upper()[i]);
            }
            cases.push(json!({
                "base": chain.base_link(), "tip": chain.tip_link(),
                "joints": chain.joint_names(), "q": &q[..chain.dof()],
            }));
            ours.push(chain.fk(&q));
        }
    }
    let theirs: Vec<serde_json::Value> = common::pinocchio(
        &py,
        "pinocchio_fk.py",
        &json!({"urdf": urdf, "cases": cases}),
    );
    assert_eq!(theirs.len(), ours.len());
    let mut worst = 0.0f64;
    for (a, b) in ours.iter().zip(&theirs) {
        for k in 0..3 {
            worst = worst.max((a.t[k] - b["t"][k].as_f64().unwrap()).abs());
            for l in 0..3 {
                worst = worst.max((a.r[(k, l)] - b["R"][k][l].as_f64().unwrap()).abs());
            }
        }
    }
    eprintln!(
        "{} configurations, max |ours - pinocchio| = {worst:.3e}",
        ours.len()
    );
    assert!(worst <= 1e-9, "max difference {worst}");
}

/// The URDF with every joint's damping and dry friction set to zero, which the articulated-body
/// reference does not model.
fn frictionless_urdf() -> String {
    let mut text = std::fs::read_to_string(common::repo_root().join("urdf/reachy.urdf")).unwrap();
    for attr in ["damping=\"", "friction=\""] {
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(attr) {
            out.push_str(&rest[..i + attr.len()]);
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').unwrap();
            out.push('0');
            rest = &rest[end..];
        }
        out.push_str(rest);
        text = out;
    }
    text
}

/// The simulator's multibody dynamics (vendored rapier with a rewritten mass-matrix path, see
/// sim/vendor/rapier3d/PATCHES.md) against Pinocchio's articulated-body algorithm: the joint
/// accelerations of the torque-off robot falling under gravity, from rest (mass matrix and
/// gravity) and after 60 ms of fall (Coriolis and gyroscopic terms), on random configurations.
#[test]
fn free_fall_accelerations_equal_pinocchio() {
    let Some(py) = common::python_with("pinocchio", "pin") else {
        return;
    };
    let urdf_text = frictionless_urdf();
    let urdf =
        std::env::temp_dir().join(format!("reachy-frictionless-{}.urdf", std::process::id()));
    std::fs::write(&urdf, &urdf_text).unwrap();
    let dt = 0.001f32;
    let mut physics = reachy_sim::physics::RobotPhysics::from_urdf_str(&urdf_text, dt).unwrap();
    physics.set_compliant(true);
    let (lower, upper) = physics.limits();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let mut cases = Vec::new();
    let mut ours: Vec<Vec<f32>> = Vec::new();
    let mut measure = |physics: &mut reachy_sim::physics::RobotPhysics| {
        let before = physics.joint_states();
        physics.step();
        let after = physics.joint_states();
        cases.push(json!({
            "joints": before.iter().map(|s| &s.0).collect::<Vec<_>>(),
            "q": before.iter().map(|s| s.1).collect::<Vec<_>>(),
            "v": before.iter().map(|s| s.2).collect::<Vec<_>>(),
        }));
        ours.push(
            before
                .iter()
                .zip(&after)
                .map(|(b, a)| (a.2 - b.2) / dt)
                .collect(),
        );
    };
    for _ in 0..4 {
        let q: Vec<f32> = lower
            .iter()
            .zip(&upper)
            .map(|(&lo, &hi)| {
                let margin = 0.3 * (hi - lo);
                rng.gen_range(lo + margin..=hi - margin)
            })
            .collect();
        physics.set_positions(&q);
        measure(&mut physics);
        for _ in 0..60 {
            physics.step();
        }
        measure(&mut physics);
    }
    let theirs: Vec<Vec<f64>> = common::pinocchio(
        &py,
        "pinocchio_aba.py",
        &json!({"urdf": urdf, "cases": cases}),
    );
    let _ = std::fs::remove_file(&urdf);
    assert_eq!(theirs.len(), ours.len());
    for (k, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        let scale = b.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - y).abs())
            .fold(0.0, f64::max);
        let speed = cases[k]["v"]
            .as_array()
            .unwrap()
            .iter()
            .fold(0.0f64, |m, v| m.max(v.as_f64().unwrap().abs()));
        eprintln!(
            "case {k}: max |v| {speed:.2} rad/s, max |a| {scale:.1} rad/s², max |ours - pinocchio| {worst:.3} ({:.2} %)",
            100.0 * worst / scale
        );
        // from rest the step is M⁻¹·τ exactly; in motion rapier treats the Coriolis and
        // gyroscopic terms semi-implicitly ((M + dt·C)⁻¹), an O(dt·|v|) difference
        let tolerance = if speed == 0.0 { 1e-3 } else { 0.03 };
        assert!(
            worst <= tolerance * scale,
            "case {k}: accelerations differ by {worst} (scale {scale}):\nours {a:?}\npinocchio {b:?}"
        );
    }
}
