//! Cameras rendered by wgpu (headless; Mesa's lavapipe without a GPU): the scene is where the
//! intrinsics and the URDF camera frames say it is, images are deterministic, and the head
//! camera's view matches a committed reference image within a small tolerance.
//!
//! `REACHY_BLESS=1 cargo test -p reachy-sim --test camera` rewrites the reference image.

use reachy_sim::camera::{read_ppm, write_ppm, CameraSpec};
use reachy_sim::world::{World, WorldConfig};

const URDF: &str = include_str!("../../urdf/reachy.urdf");

fn world(w: u32, h: u32) -> World {
    let mut cfg = WorldConfig::new(URDF);
    cfg.cameras = CameraSpec::reachy(w, h);
    let mut world = World::new(cfg).expect("renderer (install mesa-vulkan-drivers without a GPU)");
    world.advance(0.2);
    world
}

fn px(img: &[u8], w: u32, u: f32, v: f32) -> [u8; 3] {
    let i = ((v as u32 * w + u as u32) * 3) as usize;
    [img[i], img[i + 1], img[i + 2]]
}

#[test]
fn head_camera_sees_the_table_and_the_cubes_where_projected() {
    let (w, h) = (320, 240);
    let mut world = world(w, h);
    let images = world.render().unwrap();
    assert_eq!(images.len(), 3);
    if let Some(dir) = std::env::var_os("REACHY_DUMP") {
        for img in &images {
            let path = std::path::Path::new(&dir).join(format!("{}.ppm", img.name));
            write_ppm(&path, img.width, img.height, &img.rgb).unwrap();
        }
    }
    let head = &images[0];
    assert_eq!(head.name, "head_camera");
    assert_eq!(head.rgb.len(), (w * h * 3) as usize);
    let spec = &world.cameras()[0];
    let mut seen = 0;
    for (name, p, _) in world.physics().object_poses() {
        let color = world
            .physics()
            .objects()
            .iter()
            .find(|o| o.name == name)
            .unwrap()
            .color;
        let Some([u, v]) = spec.project(&head.pose, p) else {
            continue;
        };
        if u < 0.0 || v < 0.0 || u >= w as f32 || v >= h as f32 {
            continue;
        }
        let c = px(&head.rgb, w, u, v);
        // the dominant channel of the cube's colour dominates the pixel at its centre
        let k = (0..3)
            .max_by(|&a, &b| color[a].total_cmp(&color[b]))
            .unwrap();
        for j in 0..3 {
            if j != k {
                assert!(
                    c[k] as i32 > c[j] as i32 + 30,
                    "{name} at ({u:.0},{v:.0}) is {c:?}"
                );
            }
        }
        seen += 1;
    }
    assert!(seen >= 2, "the head camera sees the cubes on the table");
    // a table point away from the cubes is table-coloured (brown: r > g > b)
    let table = spec.project(&head.pose, [0.75, 0.1, 0.72]).unwrap();
    assert!(table[0] >= 0.0 && table[1] >= 0.0 && table[0] < w as f32 && table[1] < h as f32);
    let c = px(&head.rgb, w, table[0], table[1]);
    assert!(c[0] > c[1] && c[1] > c[2], "table pixel {c:?} at {table:?}");
}

#[test]
fn wrist_cameras_see_the_gripper_fingers() {
    let (w, h) = (160, 120);
    let mut world = world(w, h);
    let images = world.render().unwrap();
    for img in &images[1..] {
        // orange fingers (r high, b low) fill part of the lower image
        let orange = img
            .rgb
            .chunks_exact(3)
            .filter(|c| c[0] > 150 && (c[2] as i32) < c[0] as i32 / 2)
            .count();
        assert!(orange > 50, "{}: {orange} orange pixels", img.name);
    }
}

#[test]
fn images_are_deterministic_and_match_the_reference() {
    let (w, h) = (160, 120);
    let a = world(w, h).render().unwrap();
    let b = world(w, h).render().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!(
            x.rgb == y.rgb,
            "{}: two renders of the same state differ",
            x.name
        );
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/head_160x120.ppm");
    if std::env::var_os("REACHY_BLESS").is_some() {
        write_ppm(&path, w, h, &a[0].rgb).unwrap();
    }
    let (rw, rh, reference) = read_ppm(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!((rw, rh), (w, h));
    // another driver or GPU rasterises edges a little differently: a small tolerance
    let diffs: Vec<u8> = reference
        .iter()
        .zip(&a[0].rgb)
        .map(|(p, q)| p.abs_diff(*q))
        .collect();
    let mean = diffs.iter().map(|&d| d as f64).sum::<f64>() / diffs.len() as f64;
    let far = diffs.iter().filter(|&&d| d > 40).count() as f64 / diffs.len() as f64;
    assert!(
        mean < 3.0 && far < 0.02,
        "mean abs diff {mean:.2}, {:.2}% of values off by > 40",
        far * 100.0
    );
}

#[test]
fn ppm_reader_rejects_broken_files() {
    assert!(read_ppm(b"").is_none());
    assert!(read_ppm(b"P6\n2 2\n255\n\x00").is_none());
    assert!(read_ppm(b"P5\n1 1\n255\n\x00").is_none());
    assert!(read_ppm(b"P6\n99999999999 1\n255\n").is_none());
    assert_eq!(
        read_ppm(b"P6\n1 1\n255\n\x01\x02\x03").unwrap(),
        (1, 1, vec![1, 2, 3])
    );
}
