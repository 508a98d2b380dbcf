//! `reachy kin`: kinematics for scripts, JSON lines in and JSON lines out.
//!
//! Every input line gets exactly one output line; a malformed line gets
//! `{"error":"line N: …"}` and processing goes on.

use std::io::{BufRead, Write};

use clap::Subcommand;
use nalgebra::Vector3;
use serde::Deserialize;
use serde_json::json;

use reachy_kinematics::model::RobotModel;
use reachy_kinematics::{self as kinematics, Frame, IkOptions, IkTarget};

/// `reachy kin …`
#[derive(Debug, Subcommand)]
pub enum KinCommand {
    /// Print every chain as one JSON array: name, joints (base to tip), lower, upper, base_link, tip_link.
    Chains,
    /// Print every actuated joint as one JSON array: name, type, limits, velocity and effort
    /// limits, and its servo (bus = chain, Dynamixel ID), all derived from the URDF.
    Joints,
    /// Forward kinematics. Reads lines {"chain":"r_arm","q":[…]}; writes
    /// {"t":[x,y,z],"quat_xyzw":[x,y,z,w]}, the tip pose in the base link frame.
    Fk,
    /// Inverse kinematics. Reads lines {"chain":"r_arm","t":[…],"quat_xyzw":[…],"seed":[…]}
    /// (quat_xyzw and seed optional: no quat = position only; no seed = mid-range); writes
    /// {"ok":…,"q":[…],"pos_err":…,"rot_err":…,"iters":…}. Out of reach → ok:false, best effort.
    Ik {
        /// Position tolerance (m).
        #[arg(long, default_value_t = 1e-5)]
        pos_tol: f64,
        /// Orientation tolerance (rad).
        #[arg(long, default_value_t = 1e-5)]
        rot_tol: f64,
        /// Iteration budget per target, restarts included.
        #[arg(long, default_value_t = 3000)]
        max_iters: u32,
        /// Time budget per target in milliseconds (0 = none).
        #[arg(long, default_value_t = 0)]
        budget_ms: u64,
    },
    /// Point a camera chain's optical axis (+z of its tip) at a point. Reads lines
    /// {"chain":"head","point":[x,y,z],"seed":[…]}; writes {"ok":…,"q":[…],"angle_err":…}.
    LookAt,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FkIn {
    chain: String,
    q: Vec<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IkIn {
    chain: String,
    t: [f64; 3],
    quat_xyzw: Option<[f64; 4]>,
    seed: Option<Vec<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookAtIn {
    chain: String,
    point: [f64; 3],
    seed: Option<Vec<f64>>,
}

fn finite(name: &str, v: &[f64]) -> Result<(), String> {
    if v.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(format!("`{name}` has a non-finite value"))
    }
}

fn joint_vec(
    chain: &kinematics::Chain,
    field: &str,
    v: &[f64],
) -> Result<kinematics::JointVec, String> {
    finite(field, v)?;
    chain.joint_vec(v).ok_or_else(|| {
        format!(
            "`{field}` has {} values but chain `{}` has {} joints",
            v.len(),
            chain.name(),
            chain.dof()
        )
    })
}

fn round(x: f64) -> f64 {
    // stable text output; 1e-12 is far below any tolerance used
    (x * 1e12).round() / 1e12
}

/// Run one `kin` subcommand over `input`; returns whether any line failed.
pub fn run<R: BufRead, W: Write>(
    model: &RobotModel,
    cmd: KinCommand,
    input: R,
    mut out: W,
) -> anyhow::Result<bool> {
    if let KinCommand::Chains = cmd {
        let chains: Vec<_> = model
            .chains
            .iter()
            .map(|c| {
                json!({
                    "name": c.name(),
                    "joints": c.joint_names(),
                    "lower": c.lower(),
                    "upper": c.upper(),
                    "base_link": c.base_link(),
                    "tip_link": c.tip_link(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(chains))?;
        return Ok(false);
    }
    if let KinCommand::Joints = cmd {
        let map = model.servo_map();
        let joints: Vec<_> = model
            .joints
            .iter()
            .zip(&map)
            .map(|(j, s)| {
                json!({
                    "name": j.name, "type": j.kind,
                    "lower": j.lower.is_finite().then_some(j.lower),
                    "upper": j.upper.is_finite().then_some(j.upper),
                    "velocity": j.velocity, "effort": j.effort,
                    "bus": s.bus, "servo_id": s.id,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(joints))?;
        return Ok(false);
    }
    let mut failed = false;
    for (i, line) in input.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                failed = true;
                writeln!(out, "{}", json!({"error": format!("line {}: {e}", i + 1)}))?;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let result = match &cmd {
            KinCommand::Fk => fk_line(model, &line),
            KinCommand::Ik {
                pos_tol,
                rot_tol,
                max_iters,
                budget_ms,
            } => {
                let opts = IkOptions {
                    pos_tol: *pos_tol,
                    rot_tol: *rot_tol,
                    max_iters: *max_iters,
                    time_budget: (*budget_ms > 0)
                        .then(|| std::time::Duration::from_millis(*budget_ms)),
                    ..IkOptions::default()
                };
                ik_line(model, &line, &opts)
            }
            KinCommand::LookAt => look_at_line(model, &line),
            KinCommand::Chains | KinCommand::Joints => unreachable!("handled above"),
        };
        match result {
            Ok(v) => writeln!(out, "{v}")?,
            Err(e) => {
                failed = true;
                writeln!(out, "{}", json!({"error": format!("line {}: {e}", i + 1)}))?;
            }
        }
        out.flush()?;
    }
    Ok(failed)
}

fn fk_line(model: &RobotModel, line: &str) -> Result<serde_json::Value, String> {
    let req: FkIn = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let chain = model.chain(&req.chain).map_err(|e| e.to_string())?;
    let q = joint_vec(chain, "q", &req.q)?;
    let f = chain.fk(&q);
    Ok(json!({
        "t": [f.t.x, f.t.y, f.t.z],
        "quat_xyzw": f.quat_xyzw(),
    }))
}

fn ik_line(model: &RobotModel, line: &str, opts: &IkOptions) -> Result<serde_json::Value, String> {
    let req: IkIn = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let chain = model.chain(&req.chain).map_err(|e| e.to_string())?;
    finite("t", &req.t)?;
    let target = match req.quat_xyzw {
        Some(q) => {
            finite("quat_xyzw", &q)?;
            let n = q.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n < 1e-9 {
                return Err("`quat_xyzw` has zero norm".into());
            }
            IkTarget::Pose(Frame::from_t_quat(req.t, q))
        }
        None => IkTarget::Position(Vector3::from(req.t)),
    };
    let seed = match &req.seed {
        Some(s) => joint_vec(chain, "seed", s)?,
        None => chain.mid_range(),
    };
    let s = kinematics::solve(chain, &target, &seed, opts);
    let q: Vec<f64> = s.q[..chain.dof()].iter().map(|x| round(*x)).collect();
    Ok(json!({
        "ok": s.ok,
        "q": q,
        "pos_err": s.pos_err,
        "rot_err": s.rot_err,
        "iters": s.iters,
    }))
}

fn look_at_line(model: &RobotModel, line: &str) -> Result<serde_json::Value, String> {
    let req: LookAtIn = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let chain = model.chain(&req.chain).map_err(|e| e.to_string())?;
    finite("point", &req.point)?;
    let seed = match &req.seed {
        Some(s) => joint_vec(chain, "seed", s)?,
        None => chain.mid_range(),
    };
    let s = kinematics::look_at(chain, &Vector3::from(req.point), &seed, 1e-6);
    let q: Vec<f64> = s.q[..chain.dof()].iter().map(|x| round(*x)).collect();
    Ok(json!({"ok": s.ok, "q": q, "angle_err": s.angle_err, "iters": s.iters}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_str(cmd: KinCommand, input: &str) -> (bool, Vec<serde_json::Value>) {
        let m = RobotModel::reachy().unwrap();
        let mut out = Vec::new();
        let failed = run(&m, cmd, input.as_bytes(), &mut out).unwrap();
        let lines = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (failed, lines)
    }

    #[test]
    fn malformed_lines_get_errors_and_processing_goes_on() {
        let input = "{\"chain\":\"r_arm\",\"q\":[0,0,0,0,0,0,0]}\nnot json\n{\"chain\":\"nope\",\"q\":[]}\n{\"chain\":\"r_arm\",\"q\":[0]}\n{\"chain\":\"head\",\"q\":[0,0,0]}\n";
        let (failed, out) = run_str(KinCommand::Fk, input);
        assert!(failed);
        assert_eq!(out.len(), 5);
        assert!(out[0]["t"].is_array());
        assert!(out[1]["error"].as_str().unwrap().starts_with("line 2:"));
        assert!(out[2]["error"].as_str().unwrap().contains("unknown chain"));
        assert!(out[3]["error"].as_str().unwrap().contains("7 joints"));
        assert!(out[4]["quat_xyzw"].is_array());
    }

    #[test]
    fn ik_round_trips_fk_output() {
        let q = [0.2, -1.0, 0.3, -1.2, 0.1, 0.2, -0.4];
        let (_, fk) = run_str(
            KinCommand::Fk,
            &format!("{}\n", json!({"chain":"r_arm","q":q})),
        );
        let line = json!({"chain":"r_arm","t":fk[0]["t"],"quat_xyzw":fk[0]["quat_xyzw"]});
        let (failed, ik) = run_str(
            KinCommand::Ik {
                pos_tol: 1e-5,
                rot_tol: 1e-5,
                max_iters: 3000,
                budget_ms: 0,
            },
            &format!("{line}\n{}\n", json!({"chain":"r_arm","t":[5.0,0.0,0.0]})),
        );
        assert!(!failed);
        assert_eq!(ik[0]["ok"], true);
        assert!(ik[0]["pos_err"].as_f64().unwrap() <= 1e-5);
        assert_eq!(ik[1]["ok"], false);
        assert_eq!(ik[1]["q"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn chains_lists_all_three() {
        let (_, out) = run_str(KinCommand::Chains, "");
        let arr = out[0].as_array().unwrap();
        let names: Vec<&str> = arr.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["r_arm", "l_arm", "head"]);
        assert_eq!(arr[0]["joints"][0], "r_shoulder_pitch");
        assert_eq!(arr[2]["tip_link"], "head_camera");
        assert_eq!(arr[0]["base_link"], "base_link");
    }
}
