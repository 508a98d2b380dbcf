//! The physics robot's joints as Dynamixel 2.0 servos: one [`SimBus`] per servo bus, its
//! servos those of `reachy sim servos` (control table, EEPROM lock, hardware errors,
//! temperature) but moved by the physics instead of their own first-order model. Each control
//! period, [`PhysicsServos::sync`] gives every servo the joint's measured position, velocity and
//! torque, and gives the physics what the servos command: a position target for a servo with
//! torque on in a position mode, a limp joint (no stiffness) otherwise. The buses are served on
//! ptys with [`crate::servo_pty::serve_shared`] while the physics runs.

use std::sync::{Arc, Mutex};

use reachy_firmware::dynamixel::Model;

use crate::physics::Gains;
use crate::servo::{SimBus, SimServo};
use crate::world::World;

/// One bus: its servos (shared with the thread serving its pty) and which joint each moves.
pub struct PhysicsBus {
    /// The servo map's bus name (`r_arm`, `l_arm`, `head`).
    pub name: String,
    /// The servos.
    pub bus: Arc<Mutex<SimBus>>,
    /// (servo ID, joint index into [`World::joint_names`]).
    joints: Vec<(u8, usize)>,
}

/// The buses of the robot.
pub struct PhysicsServos {
    /// The buses.
    pub buses: Vec<PhysicsBus>,
    gains: Vec<Gains>,
    last_t: f64,
}

/// What cannot be mapped.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServoBusError(pub String);

impl PhysicsServos {
    /// Servos for the joints of `world` on `buses`, from the servo map `map` (joint, bus, ID).
    pub fn new(
        world: &World,
        map: &[(String, String, u8)],
        buses: &[String],
        model: Model,
    ) -> Result<Self, ServoBusError> {
        let names = world.joint_names();
        let mut out = Vec::new();
        for b in buses {
            let joints: Vec<(u8, usize)> = map
                .iter()
                .filter(|(_, bus, _)| bus == b)
                .filter_map(|(j, _, id)| names.iter().position(|n| n == j).map(|i| (*id, i)))
                .collect();
            if joints.is_empty() {
                let known: std::collections::BTreeSet<&str> =
                    map.iter().map(|(_, b, _)| b.as_str()).collect();
                return Err(ServoBusError(format!(
                    "no servo bus `{b}` in the servo map (known: {})",
                    known.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
            let ids: Vec<u8> = joints.iter().map(|(id, _)| *id).collect();
            let mut bus = SimBus::new(&ids, model);
            // the servos start where the joints are
            let q = world.physics().positions();
            for (id, i) in &joints {
                if let Some(s) = bus.servo_mut(*id) {
                    s.set_position(q[*i]);
                }
            }
            out.push(PhysicsBus {
                name: b.clone(),
                bus: Arc::new(Mutex::new(bus)),
                joints,
            });
        }
        Ok(Self {
            buses: out,
            gains: (0..names.len())
                .map(|i| world.physics().gains(i).unwrap_or_default())
                .collect(),
            last_t: world.physics().time(),
        })
    }

    /// After a control period: measured joints into the servos, the servos' commands into the
    /// physics.
    pub fn sync(&mut self, world: &mut World) {
        let t = world.physics().time();
        let dt = (t - self.last_t).max(0.0) as f32;
        self.last_t = t;
        let q = world.physics().positions();
        let v = world.physics().velocities().to_vec();
        let effort = world.physics_mut().efforts();
        let mut idx = Vec::new();
        let mut targets = Vec::new();
        for b in &self.buses {
            let Ok(mut bus) = b.bus.lock() else { continue };
            for &(id, i) in &b.joints {
                let Some(s) = bus.servo_mut(id) else { continue };
                s.physics_update(q[i], v[i], effort[i], dt);
                match s.position_command() {
                    Some(goal) => {
                        idx.push(i);
                        targets.push(goal);
                        world.physics_mut().set_gains(i, self.gains[i]);
                    }
                    None => {
                        // limp: no stiffness, some damping (the gearbox)
                        idx.push(i);
                        targets.push(q[i]);
                        world.physics_mut().set_gains(
                            i,
                            Gains {
                                stiffness: 0.0,
                                damping: self.gains[i].damping * 0.1,
                            },
                        );
                    }
                }
            }
        }
        // a target is clamped into the joint's limits by the physics; a bad index cannot occur
        let _ = world.set_targets_at(&idx, &targets);
    }

    /// A servo, by bus and ID (for fault injection).
    pub fn with_servo<R>(
        &self,
        bus: &str,
        id: u8,
        f: impl FnOnce(&mut SimServo) -> R,
    ) -> Option<R> {
        let b = self.buses.iter().find(|b| b.name == bus)?;
        let mut g = b.bus.lock().ok()?;
        g.servo_mut(id).map(f)
    }
}
