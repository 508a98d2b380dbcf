//! The simulated robot in its scene: physics, cameras and a seed, driven by a plain Rust API
//! (no zenoh, no tokio). The zenoh bridge in `reachy-apps` and in-process users (tests, the demo)
//! drive the same [`World`].

use crate::camera::{CameraSpec, RenderError, Renderer};
use crate::physics::{home_pose, PhysicsError, RobotPhysics, SceneConfig};

/// Errors of the world.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// Physics could not be built, or a command was refused.
    #[error(transparent)]
    Physics(#[from] PhysicsError),
    /// The renderer failed.
    #[error(transparent)]
    Render(#[from] RenderError),
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// Robot description (URDF text).
    pub urdf: String,
    /// Physics step (s); 1 ms by default.
    pub physics_dt: f32,
    /// The manipulation scene (its `seed` places the objects); `None` for the robot alone.
    pub scene: Option<SceneConfig>,
    /// Cameras to render (may be empty: no renderer is created).
    pub cameras: Vec<CameraSpec>,
}

impl WorldConfig {
    /// The robot of `urdf` with the default scene, no cameras, 1 ms physics.
    pub fn new(urdf: &str) -> Self {
        Self {
            urdf: urdf.to_string(),
            physics_dt: 0.001,
            scene: Some(SceneConfig::default()),
            cameras: Vec::new(),
        }
    }
}

/// One rendered camera image.
#[derive(Debug, Clone)]
pub struct CameraImage {
    /// Camera name.
    pub name: String,
    /// Width (pixels).
    pub width: u32,
    /// Height (pixels).
    pub height: u32,
    /// RGB8 pixels, row-major, no padding.
    pub rgb: Vec<u8>,
    /// World-from-optical-frame pose at the exposure.
    pub pose: rapier3d::math::Pose,
}

/// The robot, its scene and its cameras.
pub struct World {
    cfg: WorldConfig,
    physics: RobotPhysics,
    names: Vec<String>,
    renderer: Option<Renderer>,
}

impl World {
    /// Build the world; the robot starts at its home pose, holding it.
    pub fn new(cfg: WorldConfig) -> Result<Self, WorldError> {
        let renderer = if cfg.cameras.is_empty() {
            None
        } else {
            Some(Renderer::new(&cfg.cameras)?)
        };
        let physics = Self::build(&cfg)?;
        let names = physics
            .joint_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        Ok(Self {
            cfg,
            physics,
            names,
            renderer,
        })
    }

    fn build(cfg: &WorldConfig) -> Result<RobotPhysics, PhysicsError> {
        let mut p = RobotPhysics::from_urdf_str(&cfg.urdf, cfg.physics_dt)?;
        if let Some(scene) = &cfg.scene {
            p.add_scene(scene);
        }
        let q = home_pose(&p.joint_names());
        p.set_targets(&q)?;
        p.set_positions(&q);
        Ok(p)
    }

    /// Rebuild everything at time 0 with the objects placed from `seed`; the robot at home.
    pub fn reset(&mut self, seed: u64) -> Result<(), WorldError> {
        if let Some(s) = &mut self.cfg.scene {
            s.seed = seed;
        }
        self.physics = Self::build(&self.cfg)?;
        Ok(())
    }

    /// The scene seed.
    pub fn seed(&self) -> u64 {
        self.cfg.scene.as_ref().map_or(0, |s| s.seed)
    }

    /// The configuration.
    pub fn config(&self) -> &WorldConfig {
        &self.cfg
    }

    /// Actuated joint names, in URDF order.
    pub fn joint_names(&self) -> &[String] {
        &self.names
    }

    /// The physics, read-only.
    pub fn physics(&self) -> &RobotPhysics {
        &self.physics
    }

    /// The physics (to set targets, read efforts).
    pub fn physics_mut(&mut self) -> &mut RobotPhysics {
        &mut self.physics
    }

    /// Set the targets of the joints at `indices` (into [`Self::joint_names`]); the others keep
    /// theirs.
    pub fn set_targets_at(&mut self, indices: &[usize], values: &[f32]) -> Result<(), WorldError> {
        let mut q = self.physics.targets();
        for (&i, &v) in indices.iter().zip(values) {
            if let Some(t) = q.get_mut(i) {
                *t = v;
            }
        }
        self.physics.set_targets(&q)?;
        Ok(())
    }

    /// Advance by `seconds` of simulated time (rounded to whole physics steps, at least one).
    pub fn advance(&mut self, seconds: f64) -> usize {
        let n = ((seconds / self.cfg.physics_dt as f64).round() as usize).max(1);
        for _ in 0..n {
            self.physics.step();
        }
        n
    }

    /// The cameras.
    pub fn cameras(&self) -> &[CameraSpec] {
        &self.cfg.cameras
    }

    /// Render every camera at the current state.
    pub fn render(&mut self) -> Result<Vec<CameraImage>, WorldError> {
        let Some(r) = &mut self.renderer else {
            return Ok(Vec::new());
        };
        let prims = self.physics.primitives();
        let poses: Vec<_> = self
            .cfg
            .cameras
            .iter()
            .map(|c| {
                self.physics
                    .link_pose(&c.name)
                    .unwrap_or(rapier3d::math::Pose::IDENTITY)
            })
            .collect();
        let images = r.render(&prims, &poses)?;
        Ok(images
            .into_iter()
            .zip(&self.cfg.cameras)
            .zip(poses)
            .map(|((rgb, c), pose)| CameraImage {
                name: c.name.clone(),
                width: c.width,
                height: c.height,
                rgb,
                pose,
            })
            .collect())
    }

    /// The renderer's adapter (e.g. `llvmpipe (Vulkan)`), when cameras are on.
    pub fn renderer_info(&self) -> Option<String> {
        self.renderer.as_ref().map(|r| r.adapter_info())
    }
}
