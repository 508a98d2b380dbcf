//! The physics robot's joints as Dynamixel servo buses on ptys (`reachy sim --servo-bus`, and
//! the firmware path of the in-process robot): [`reachy_sim::servo_bus::PhysicsServos`] for
//! the buses of the URDF's servo map, each served on its pty by a thread of its own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use reachy_kinematics::model::RobotModel;
use reachy_sim::servo_bus::PhysicsServos;

/// The threads serving the buses' ptys; dropping it stops them.
pub struct BusServers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for BusServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Servos for the joints of `world` on `buses` (servo-map bus, pty path), served from now on,
/// their replies taking the time of `wire`. The servos go to the sim's observer
/// ([`PhysicsServos::sync`] every control period); the servers stop when dropped.
pub fn serve(
    world: &reachy_sim::world::World,
    model: &RobotModel,
    buses: &[(String, PathBuf)],
    wire: reachy_sim::servo_pty::Wire,
) -> anyhow::Result<(PhysicsServos, BusServers)> {
    let map: Vec<(String, String, u8)> = model
        .servo_map()
        .into_iter()
        .map(|s| (s.joint, s.bus, s.id))
        .collect();
    let names: Vec<String> = buses.iter().map(|(b, _)| b.clone()).collect();
    let servos = PhysicsServos::new(
        world,
        &map,
        &names,
        reachy_firmware::dynamixel::Model::Xm430W350,
    )?;
    let mut servers = BusServers {
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
    };
    for (b, (_, path)) in servos.buses.iter().zip(buses) {
        let mut ep = reachy_sim::servo_pty::PtyEndpoint::create(path)
            .with_context(|| format!("the servo bus {} at {}", b.name, path.display()))?;
        let (bus, stop) = (b.bus.clone(), servers.stop.clone());
        servers.threads.push(
            std::thread::Builder::new()
                .name(format!("servo bus {}", b.name))
                .spawn(move || {
                    if let Err(e) = reachy_sim::servo_pty::serve_shared(&bus, &mut ep, &stop, wire)
                    {
                        tracing::warn!("servo bus: {e}");
                    }
                })?,
        );
        tracing::info!(bus = %b.name, pty = %path.display(), "physics servo bus ready");
    }
    Ok((servos, servers))
}
