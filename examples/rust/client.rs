//! A Rust client of the robot, using nothing but `reachy-api` (zenoh + serde: no physics,
//! rendering or learning crates): read the state, move a joint, move the TCP.
//!
//! ```text
//! reachy daemon --listen tcp/127.0.0.1:7448 &          # or `reachy sim` + `reachy daemon`
//! cargo run -p reachy-api --example client -- tcp/127.0.0.1:7448
//! ```
#![forbid(unsafe_code)]

use std::time::Duration;

use reachy_api::zenoh::Wait;
use reachy_api::{RobotClient, RobotIo, ZenohOptions};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp/127.0.0.1:7448".into());
    let session = ZenohOptions {
        connect: vec![endpoint],
        ..Default::default()
    }
    .open()?;
    // finds the daemon, takes the lease at script priority, waits for its first state
    let mut robot = RobotClient::connect(
        &session,
        "reachy",
        "example-client",
        "script",
        Duration::from_secs(10),
    )?;

    let state = robot.state()?;
    println!(
        "{} joints on the {} backend",
        state.names.len(),
        state.backend
    );
    for tcp in &state.tcp {
        println!("{} at {:?}", tcp.name, tcp.pose.position);
    }

    // a joint goto with a minimum-jerk profile; returns when the daemon says it is done
    let reply = robot.goto(&["r_elbow_pitch".to_string()], &[-1.2], 1.5)?;
    println!("goto: {} {:?}", reply.status, reply.reason);

    // a Cartesian target streamed to the daemon's IK: 5 cm up from where the TCP is
    let here = robot
        .state()?
        .tcp
        .iter()
        .find(|t| t.name == "r_arm")
        .map(|t| t.pose.position)
        .ok_or("the robot has no r_arm")?;
    for k in 1..=50 {
        let up = here[2] + 0.05 * k as f32 / 50.0;
        robot.cartesian("r_arm", [here[0], here[1], up], None, None)?;
        robot.advance(0.02)?;
    }
    let s = robot.state()?;
    println!("IK verdicts: {:?}", s.cartesian);
    session.close().wait()?;
    Ok(())
}
