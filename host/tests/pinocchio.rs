//! Forward kinematics cross-checked against Pinocchio (`pip install pin`) to 1e-9 on random
//! configurations of every chain.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use rand::{Rng, SeedableRng};
use reachy_host::kinematics::MAX_DOF;
use reachy_host::model::RobotModel;
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
    let mut child = Command::new(&py)
        .arg(common::repo_root().join("host/tests/python/pinocchio_fk.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!({"urdf": urdf, "cases": cases}).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pinocchio script failed");
    let theirs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
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
