//! Cameras rendered with `wgpu`, offscreen and headless: on a GPU when there is one
//! (`PowerPreference::HighPerformance`), otherwise on Mesa's CPU Vulkan driver (lavapipe) or GL.
//!
//! Pinhole cameras in the optical convention of the URDF's camera frames (+z along the optical
//! axis, +x right, +y down) with intrinsics from [`CameraSpec`]; the robot's URDF visuals, the
//! table and the cubes are drawn as instanced boxes, cylinders and spheres with Lambert shading
//! from two directional lights. Output: RGB8, row-major, top row first.

use std::borrow::Cow;
use std::sync::mpsc;

use rapier3d::math::Pose;
use wgpu::util::DeviceExt;

use crate::physics::{Primitive, Shape};

/// Errors of the renderer.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No adapter (no GPU and no software driver: install Debian's `mesa-vulkan-drivers`).
    #[error("no wgpu adapter: {0} (without a GPU, install Mesa's lavapipe: apt-get install mesa-vulkan-drivers)")]
    NoAdapter(String),
    /// The device could not be created.
    #[error("wgpu device: {0}")]
    Device(String),
    /// Reading the image back failed.
    #[error("reading the image back: {0}")]
    Readback(String),
    /// Cameras of different sizes, or a size of zero.
    #[error("bad camera setup: {0}")]
    Setup(String),
}

/// A camera: the URDF link of its optical frame, its image size and vertical field of view.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSpec {
    /// URDF link of the optical frame, e.g. `head_camera`; also the camera's name.
    pub name: String,
    /// Width (pixels).
    pub width: u32,
    /// Height (pixels).
    pub height: u32,
    /// Vertical field of view (degrees).
    pub vfov_deg: f32,
}

impl CameraSpec {
    /// Reachy's cameras: a wide head camera (90° vertical: with the head pitched down it sees
    /// the whole table), right and left wrist (75°).
    pub fn reachy(width: u32, height: u32) -> Vec<CameraSpec> {
        [
            ("head_camera", 90.0),
            ("r_wrist_camera", 75.0),
            ("l_wrist_camera", 75.0),
        ]
        .into_iter()
        .map(|(n, f)| CameraSpec {
            name: n.into(),
            width,
            height,
            vfov_deg: f,
        })
        .collect()
    }

    /// Pinhole intrinsics `[fx, fy, cx, cy]` (pixels; square pixels, centred principal point).
    pub fn intrinsics(&self) -> [f32; 4] {
        let fy = self.height as f32 / 2.0 / (self.vfov_deg.to_radians() / 2.0).tan();
        [fy, fy, self.width as f32 / 2.0, self.height as f32 / 2.0]
    }

    /// Project a world point seen from a camera at `pose` (world from optical frame) to pixel
    /// coordinates; `None` behind the camera.
    pub fn project(&self, pose: &Pose, world: [f32; 3]) -> Option<[f32; 2]> {
        let p =
            pose.inverse_transform_point(rapier3d::math::Vector::new(world[0], world[1], world[2]));
        if p.z <= 1e-6 {
            return None;
        }
        let [fx, fy, cx, cy] = self.intrinsics();
        Some([fx * p.x / p.z + cx, fy * p.y / p.z + cy])
    }
}

const NEAR: f32 = 0.02;
const FAR: f32 = 20.0;
const MAX_INSTANCES: usize = 512;
/// Floats per instance: model matrix (16), scale + pad (4), colour (4).
const INSTANCE_FLOATS: usize = 24;

const SHADER: &str = r#"
struct Camera {
    view: mat4x4<f32>,
    // fx, fy, cx, cy in NDC units: x_clip = k.x * x + k.z * z, y_clip = k.y * y + k.w * z
    k: vec4<f32>,
    // near, far
    depth: vec4<f32>,
}
@group(0) @binding(0) var<uniform> cam: Camera;

struct VsIn {
    @location(0) position: vec3<f32>,
    @location(1) normal: vec3<f32>,
    @location(2) m0: vec4<f32>,
    @location(3) m1: vec4<f32>,
    @location(4) m2: vec4<f32>,
    @location(5) m3: vec4<f32>,
    @location(6) scale: vec4<f32>,
    @location(7) color: vec4<f32>,
}
struct VsOut {
    @builtin(position) clip: vec4<f32>,
    @location(0) normal: vec3<f32>,
    @location(1) color: vec3<f32>,
}

@vertex
fn vs_main(v: VsIn) -> VsOut {
    let model = mat4x4<f32>(v.m0, v.m1, v.m2, v.m3);
    let world = model * vec4<f32>(v.position * v.scale.xyz, 1.0);
    let p = cam.view * world;
    let n = cam.depth.x;
    let f = cam.depth.y;
    var o: VsOut;
    o.clip = vec4<f32>(
        cam.k.x * p.x + cam.k.z * p.z,
        cam.k.y * p.y + cam.k.w * p.z,
        f / (f - n) * p.z - f * n / (f - n),
        p.z,
    );
    o.normal = (model * vec4<f32>(v.normal / v.scale.xyz, 0.0)).xyz;
    o.color = v.color.rgb;
    return o;
}

@fragment
fn fs_main(f: VsOut) -> @location(0) vec4<f32> {
    let n = normalize(f.normal);
    let key = max(dot(n, normalize(vec3<f32>(0.4, -0.3, 1.0))), 0.0);
    let fill = max(dot(n, normalize(vec3<f32>(-0.5, 0.6, 0.3))), 0.0);
    let c = f.color * (0.30 + 0.60 * key + 0.20 * fill);
    return vec4<f32>(min(c, vec3<f32>(1.0)), 1.0);
}
"#;

/// Unit meshes: positions and normals interleaved (6 floats per vertex), triangle lists.
struct Mesh {
    vertices: wgpu::Buffer,
    count: u32,
}

fn cube_vertices() -> Vec<f32> {
    let mut out = Vec::with_capacity(36 * 6);
    for axis in 0..3 {
        for sign in [1.0f32, -1.0] {
            let mut n = [0.0f32; 3];
            n[axis] = sign;
            let (mut u, mut w) = ([0.0f32; 3], [0.0f32; 3]);
            u[(axis + 1) % 3] = 1.0;
            w[(axis + 2) % 3] = 1.0;
            if sign < 0.0 {
                std::mem::swap(&mut u, &mut w);
            }
            // the unit box spans [-1, 1]: scaled by the half extents
            let p = |a: f32, b: f32| -> [f32; 3] {
                std::array::from_fn(|i| n[i] + a * u[i] + b * w[i])
            };
            for (a, b) in [
                (-1., -1.),
                (1., -1.),
                (1., 1.),
                (-1., -1.),
                (1., 1.),
                (-1., 1.),
            ] {
                out.extend_from_slice(&p(a, b));
                out.extend_from_slice(&n);
            }
        }
    }
    out
}

/// Cylinder of radius 1 along z from −1 to 1.
fn cylinder_vertices(seg: usize) -> Vec<f32> {
    let mut out = Vec::new();
    let pt = |k: usize| {
        let a = k as f32 / seg as f32 * std::f32::consts::TAU;
        (a.cos(), a.sin())
    };
    for k in 0..seg {
        let (c0, s0) = pt(k);
        let (c1, s1) = pt(k + 1);
        // side: two triangles, smooth normals
        for (x, y, z) in [
            (c0, s0, -1.0),
            (c1, s1, -1.0),
            (c1, s1, 1.0),
            (c0, s0, -1.0),
            (c1, s1, 1.0),
            (c0, s0, 1.0),
        ] {
            out.extend_from_slice(&[x, y, z, x, y, 0.0]);
        }
        // caps
        for (x, y) in [(0.0, 0.0), (c0, s0), (c1, s1)] {
            out.extend_from_slice(&[x, y, 1.0, 0.0, 0.0, 1.0]);
        }
        for (x, y) in [(0.0, 0.0), (c1, s1), (c0, s0)] {
            out.extend_from_slice(&[x, y, -1.0, 0.0, 0.0, -1.0]);
        }
    }
    out
}

/// Unit sphere.
fn sphere_vertices(rings: usize, seg: usize) -> Vec<f32> {
    let mut out = Vec::new();
    let p = |i: usize, k: usize| {
        let th = i as f32 / rings as f32 * std::f32::consts::PI;
        let ph = k as f32 / seg as f32 * std::f32::consts::TAU;
        [th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()]
    };
    for i in 0..rings {
        for k in 0..seg {
            let (a, b, c, d) = (p(i, k), p(i + 1, k), p(i + 1, k + 1), p(i, k + 1));
            for v in [a, b, c, a, c, d] {
                out.extend_from_slice(&v);
                out.extend_from_slice(&v);
            }
        }
    }
    out
}

struct Target {
    color: wgpu::Texture,
    color_view: wgpu::TextureView,
    depth_view: wgpu::TextureView,
    camera: wgpu::Buffer,
    bind: wgpu::BindGroup,
    readback: wgpu::Buffer,
}

/// An offscreen renderer for a set of same-size cameras.
pub struct Renderer {
    specs: Vec<CameraSpec>,
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::RenderPipeline,
    meshes: [Mesh; 3],
    instances: wgpu::Buffer,
    targets: Vec<Target>,
    info: String,
    padded_row: u32,
}

fn bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

impl Renderer {
    /// Create the device and one render target per camera (all cameras the same size).
    pub fn new(specs: &[CameraSpec]) -> Result<Self, RenderError> {
        let first = specs
            .first()
            .ok_or_else(|| RenderError::Setup("no camera".into()))?;
        let (w, h) = (first.width, first.height);
        if w == 0 || h == 0 || specs.iter().any(|s| (s.width, s.height) != (w, h)) {
            return Err(RenderError::Setup(
                "cameras must share one non-zero size".into(),
            ));
        }
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::from_env()
                .unwrap_or(wgpu::Backends::VULKAN | wgpu::Backends::GL),
            flags: wgpu::InstanceFlags::empty(),
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        });
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
        }))
        .map_err(|e| RenderError::NoAdapter(e.to_string()))?;
        let ai = adapter.get_info();
        let info = format!("{} ({:?}, {:?})", ai.name, ai.backend, ai.device_type);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("reachy-sim cameras"),
            required_features: wgpu::Features::empty(),
            required_limits:
                wgpu::Limits::downlevel_webgl2_defaults().using_resolution(adapter.limits()),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| RenderError::Device(e.to_string()))?;

        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("camera.wgsl"),
            source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(SHADER)),
        });
        let mesh = |label: &str, v: Vec<f32>| Mesh {
            count: (v.len() / 6) as u32,
            vertices: device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytes(&v),
                usage: wgpu::BufferUsages::VERTEX,
            }),
        };
        let meshes = [
            mesh("box", cube_vertices()),
            mesh("cylinder", cylinder_vertices(24)),
            mesh("sphere", sphere_vertices(12, 24)),
        ];
        let instances = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("instances"),
            size: (MAX_INSTANCES * INSTANCE_FLOATS * 4) as u64,
            usage: wgpu::BufferUsages::VERTEX | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("camera"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::VERTEX,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: wgpu::BufferSize::new(96),
                },
                count: None,
            }],
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("camera"),
            bind_group_layouts: &[Some(&bgl)],
            immediate_size: 0,
        });
        const VERT: [wgpu::VertexAttribute; 2] =
            wgpu::vertex_attr_array![0 => Float32x3, 1 => Float32x3];
        const INST: [wgpu::VertexAttribute; 6] = wgpu::vertex_attr_array![
            2 => Float32x4, 3 => Float32x4, 4 => Float32x4, 5 => Float32x4, 6 => Float32x4, 7 => Float32x4
        ];
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("scene"),
            layout: Some(&layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                buffers: &[
                    wgpu::VertexBufferLayout {
                        array_stride: 24,
                        step_mode: wgpu::VertexStepMode::Vertex,
                        attributes: &VERT,
                    },
                    wgpu::VertexBufferLayout {
                        array_stride: (INSTANCE_FLOATS * 4) as u64,
                        step_mode: wgpu::VertexStepMode::Instance,
                        attributes: &INST,
                    },
                ],
            },
            // the optical frame (y down) mirrors handedness: cull nothing rather than guess
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: Some(wgpu::DepthStencilState {
                format: wgpu::TextureFormat::Depth32Float,
                depth_write_enabled: Some(true),
                depth_compare: Some(wgpu::CompareFunction::Less),
                stencil: wgpu::StencilState::default(),
                bias: wgpu::DepthBiasState::default(),
            }),
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                targets: &[Some(wgpu::ColorTargetState {
                    format: wgpu::TextureFormat::Rgba8Unorm,
                    blend: Some(wgpu::BlendState::REPLACE),
                    write_mask: wgpu::ColorWrites::ALL,
                })],
            }),
            multiview_mask: None,
            cache: None,
        });
        let padded_row = (w * 4).div_ceil(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT)
            * wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
        let size = wgpu::Extent3d {
            width: w,
            height: h,
            depth_or_array_layers: 1,
        };
        let targets = specs
            .iter()
            .map(|s| {
                let tex = |label: &str, format, usage| {
                    device.create_texture(&wgpu::TextureDescriptor {
                        label: Some(label),
                        size,
                        mip_level_count: 1,
                        sample_count: 1,
                        dimension: wgpu::TextureDimension::D2,
                        format,
                        usage,
                        view_formats: &[],
                    })
                };
                let color = tex(
                    &s.name,
                    wgpu::TextureFormat::Rgba8Unorm,
                    wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
                );
                let depth = tex(
                    "depth",
                    wgpu::TextureFormat::Depth32Float,
                    wgpu::TextureUsages::RENDER_ATTACHMENT,
                );
                let camera = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("camera uniforms"),
                    size: 96,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("camera"),
                    layout: &bgl,
                    entries: &[wgpu::BindGroupEntry {
                        binding: 0,
                        resource: camera.as_entire_binding(),
                    }],
                });
                let readback = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size: (padded_row * h) as u64,
                    usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
                    mapped_at_creation: false,
                });
                Target {
                    color_view: color.create_view(&wgpu::TextureViewDescriptor::default()),
                    depth_view: depth.create_view(&wgpu::TextureViewDescriptor::default()),
                    color,
                    camera,
                    bind,
                    readback,
                }
            })
            .collect();
        Ok(Self {
            specs: specs.to_vec(),
            device,
            queue,
            pipeline,
            meshes,
            instances,
            targets,
            info,
            padded_row,
        })
    }

    /// The adapter in use, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, Cpu)`.
    pub fn adapter_info(&self) -> String {
        self.info.clone()
    }

    /// Render `prims` from every camera; `poses[i]` is camera i's world-from-optical pose.
    /// Returns one RGB8 image per camera.
    pub fn render(
        &mut self,
        prims: &[Primitive],
        poses: &[Pose],
    ) -> Result<Vec<Vec<u8>>, RenderError> {
        if poses.len() != self.specs.len() {
            return Err(RenderError::Setup(format!(
                "{} poses for {} cameras",
                poses.len(),
                self.specs.len()
            )));
        }
        // instances grouped by mesh: boxes, cylinders, spheres
        let mut data: Vec<f32> = Vec::with_capacity(prims.len() * INSTANCE_FLOATS);
        let mut ranges = [0u32..0, 0..0, 0..0];
        for (m, range) in ranges.iter_mut().enumerate() {
            let start = (data.len() / INSTANCE_FLOATS) as u32;
            for p in prims {
                let (mesh, scale) = match p.shape {
                    Shape::Box(h) => (0, h),
                    Shape::Cylinder(r, hl) => (1, [r, r, hl]),
                    Shape::Sphere(r) => (2, [r, r, r]),
                };
                if mesh != m || data.len() / INSTANCE_FLOATS >= MAX_INSTANCES {
                    continue;
                }
                data.extend_from_slice(&p.pose.to_mat4().to_cols_array());
                data.extend_from_slice(&[scale[0], scale[1], scale[2], 0.0]);
                data.extend_from_slice(&[p.color[0], p.color[1], p.color[2], 1.0]);
            }
            *range = start..(data.len() / INSTANCE_FLOATS) as u32;
        }
        self.queue.write_buffer(&self.instances, 0, bytes(&data));
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("cameras"),
            });
        for ((t, spec), pose) in self.targets.iter().zip(&self.specs).zip(poses) {
            let [fx, fy, cx, cy] = spec.intrinsics();
            let (w, h) = (spec.width as f32, spec.height as f32);
            let mut u: Vec<f32> = pose.inverse().to_mat4().to_cols_array().to_vec();
            u.extend_from_slice(&[
                2.0 * fx / w,
                -2.0 * fy / h,
                2.0 * cx / w - 1.0,
                1.0 - 2.0 * cy / h,
            ]);
            u.extend_from_slice(&[NEAR, FAR, 0.0, 0.0]);
            self.queue.write_buffer(&t.camera, 0, bytes(&u));
            {
                let mut pass = enc.begin_render_pass(&wgpu::RenderPassDescriptor {
                    label: Some(&spec.name),
                    color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                        view: &t.color_view,
                        depth_slice: None,
                        resolve_target: None,
                        ops: wgpu::Operations {
                            // a pale sky
                            load: wgpu::LoadOp::Clear(wgpu::Color {
                                r: 0.78,
                                g: 0.84,
                                b: 0.92,
                                a: 1.0,
                            }),
                            store: wgpu::StoreOp::Store,
                        },
                    })],
                    depth_stencil_attachment: Some(wgpu::RenderPassDepthStencilAttachment {
                        view: &t.depth_view,
                        depth_ops: Some(wgpu::Operations {
                            load: wgpu::LoadOp::Clear(1.0),
                            store: wgpu::StoreOp::Store,
                        }),
                        stencil_ops: None,
                    }),
                    timestamp_writes: None,
                    occlusion_query_set: None,
                    multiview_mask: None,
                });
                pass.set_pipeline(&self.pipeline);
                pass.set_bind_group(0, &t.bind, &[]);
                pass.set_vertex_buffer(1, self.instances.slice(..));
                for (mesh, range) in self.meshes.iter().zip(&ranges) {
                    if range.is_empty() {
                        continue;
                    }
                    pass.set_vertex_buffer(0, mesh.vertices.slice(..));
                    pass.draw(0..mesh.count, range.clone());
                }
            }
            enc.copy_texture_to_buffer(
                wgpu::TexelCopyTextureInfo {
                    texture: &t.color,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::TexelCopyBufferInfo {
                    buffer: &t.readback,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(self.padded_row),
                        rows_per_image: Some(spec.height),
                    },
                },
                wgpu::Extent3d {
                    width: spec.width,
                    height: spec.height,
                    depth_or_array_layers: 1,
                },
            );
        }
        let submission = self.queue.submit([enc.finish()]);
        let (tx, rx) = mpsc::channel();
        for (i, t) in self.targets.iter().enumerate() {
            let tx = tx.clone();
            t.readback
                .slice(..)
                .map_async(wgpu::MapMode::Read, move |r| {
                    let _ = tx.send((i, r));
                });
        }
        drop(tx);
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map_err(|e| RenderError::Readback(e.to_string()))?;
        for _ in 0..self.targets.len() {
            let (_, r) = rx
                .recv()
                .map_err(|_| RenderError::Readback("map callback never ran".into()))?;
            r.map_err(|e| RenderError::Readback(e.to_string()))?;
        }
        let mut out = Vec::with_capacity(self.targets.len());
        for (t, spec) in self.targets.iter().zip(&self.specs) {
            let mut rgb = Vec::with_capacity((spec.width * spec.height * 3) as usize);
            {
                let view = t.readback.slice(..).get_mapped_range();
                for row in view.chunks_exact(self.padded_row as usize) {
                    for px in row[..(spec.width * 4) as usize].chunks_exact(4) {
                        rgb.extend_from_slice(&px[..3]);
                    }
                }
            }
            t.readback.unmap();
            out.push(rgb);
        }
        Ok(out)
    }
}

/// Write an RGB8 image as binary PPM (P6), a format every image tool reads.
pub fn write_ppm(
    path: &std::path::Path,
    width: u32,
    height: u32,
    rgb: &[u8],
) -> std::io::Result<()> {
    let mut data = format!("P6\n{width} {height}\n255\n").into_bytes();
    data.extend_from_slice(rgb);
    std::fs::write(path, data)
}

/// Read a binary PPM (P6, maxval 255) written by [`write_ppm`]: (width, height, rgb).
pub fn read_ppm(bytes: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if start == i {
            return None;
        }
        fields.push(std::str::from_utf8(&bytes[start..i]).ok()?.to_string());
    }
    if fields[0] != "P6" || fields[3] != "255" {
        return None;
    }
    let (w, h): (u32, u32) = (fields[1].parse().ok()?, fields[2].parse().ok()?);
    let data = bytes.get(i + 1..)?;
    let n = (w as usize).checked_mul(h as usize)?.checked_mul(3)?;
    (data.len() == n).then(|| (w, h, data.to_vec()))
}
