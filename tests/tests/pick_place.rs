//! A scripted pick-and-place in lock-step: the host's IK and the simulator's physics, grippers
//! and contacts together. The cube must be lifted and end within 2 cm of its target, resting on
//! the table, and the whole run must be deterministic. The success test is ignored until the
//! grasp holds (issue 4); the determinism test runs.

use reachy_host::model::{RobotModel, REACHY_URDF};
use reachy_host::pick_place::{self, PickPlace};
use reachy_sim::world::{World, WorldConfig};

/// A free spot on the same side as `obj`, at least 10 cm from every other object.
fn free_spot(world: &World, obj: &str) -> [f32; 2] {
    let poses = world.physics().object_poses();
    let me = poses.iter().find(|p| p.0 == obj).unwrap().1;
    let side = if me[1] < 0.0 { -1.0 } else { 1.0 };
    let mut best = ([0.45, side * 0.2], 0.0f32);
    for ix in 0..6 {
        for iy in 0..6 {
            let c = [0.38 + 0.025 * ix as f32, side * (0.08 + 0.04 * iy as f32)];
            let d = poses
                .iter()
                .map(|(_, p, _)| (p[0] - c[0]).hypot(p[1] - c[1]))
                .fold(f32::MAX, f32::min);
            if d > best.1 {
                best = (c, d);
            }
        }
    }
    assert!(best.1 > 0.1, "no free spot");
    best.0
}

fn run(seed: u64, object: &str) -> (pick_place::PickPlaceReport, Vec<u32>) {
    let (r, bits) = try_run(seed, object);
    (r.unwrap_or_else(|e| panic!("{e}")), bits)
}

/// Run the script; the final state's bits whatever the outcome.
fn try_run(seed: u64, object: &str) -> (Result<pick_place::PickPlaceReport, String>, Vec<u32>) {
    let model = RobotModel::reachy().unwrap();
    let mut cfg = WorldConfig::new(REACHY_URDF);
    cfg.scene.as_mut().unwrap().seed = seed;
    let mut world = World::new(cfg).unwrap();
    world.advance(0.3); // let the cubes settle
    let place = free_spot(&world, object);
    let task = PickPlace::new(object, place);
    let mut log = Vec::new();
    let report = pick_place::run(&mut world, &model, &task, &mut |s| log.push(s.to_string()))
        .map_err(|e| format!("seed {seed}: {e:#}\n{}", log.join("\n")));
    eprintln!("seed {seed} {object}:\n  {}", log.join("\n  "));
    let bits = world
        .physics()
        .object_poses()
        .iter()
        .flat_map(|(_, p, q)| p.iter().chain(q).map(|x| x.to_bits()).collect::<Vec<_>>())
        .chain(world.physics().positions().iter().map(|x| x.to_bits()))
        .collect();
    (report, bits)
}

#[test]
#[ignore = "the grasp does not hold yet: see issue 4's note (cubes slip or are pushed through the \
            table at one solver iteration); run with --ignored to see where it stands"]
fn scripted_pick_and_place_succeeds_in_lockstep() {
    for (seed, object) in [(0, "red_cube"), (1, "green_cube"), (2, "blue_cube")] {
        let (r, _) = run(seed, object);
        assert!(r.lifted, "seed {seed}: {object} was not lifted: {r:?}");
        assert!(
            r.success,
            "seed {seed}: {object} ended {:.1} mm from its target: {r:?}",
            r.error_xy * 1000.0
        );
    }
}

#[test]
fn pick_and_place_is_deterministic() {
    // whatever the outcome, the same seed and script give the same final state, bit for bit
    let (a, bits_a) = try_run(0, "red_cube");
    let (b, bits_b) = try_run(0, "red_cube");
    assert_eq!(
        bits_a, bits_b,
        "same seed, same commands: same final state bit for bit"
    );
    assert_eq!(a.map(|r| r.end), b.map(|r| r.end));
}
