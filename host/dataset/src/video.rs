//! Camera streams to H.264 MP4 files: RGB frames converted to yuv420p (BT.601, limited range,
//! as decoders assume for untagged SD video and as the SPS's VUI says), encoded by OpenH264
//! (built from source) and muxed by [`crate::mp4`]; the per-channel pixel histogram of every
//! frame is kept for the dataset's image statistics.
//!
//! Why H.264/OpenH264: it decodes everywhere (PyAV's bundled FFmpeg, torchcodec, browsers,
//! every player), it encodes faster than lerobot's AV1 encoder on the same frames (measured:
//! the README's recording benchmark), and it builds from crates.io
//! with no system library. The README's recording benchmark gives the figures.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use openh264::encoder::{
    Encoder, EncoderConfig, FrameType, IntraFramePeriod, QpRange, RateControlMode, UsageType,
    VuiConfig,
};
use openh264::formats::YUVSlices;
use openh264::OpenH264API;

use crate::mp4::Mp4Writer;
use crate::{bail, Context, DatasetError};

/// How camera streams are encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoOptions {
    /// Frames between key frames (1: every frame; lerobot's default is 2).
    pub gop: u32,
    /// Quantiser (H.264 QP, 0 = best … 51 = worst); fixed, so quality does not swing with motion.
    pub qp: u8,
}

impl Default for VideoOptions {
    fn default() -> Self {
        // g = 2 as lerobot writes, so random access decodes at most one extra frame; QP 22 keeps
        // decoded frames within ~40 dB of the renders (tested ≥ 35 dB)
        Self { gop: 2, qp: 22 }
    }
}

/// Per-channel histograms (R, G, B) of 8-bit pixel values.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram(pub Box<[[u64; 256]; 3]>);

impl Default for Histogram {
    fn default() -> Self {
        Self(Box::new([[0; 256]; 3]))
    }
}

impl Histogram {
    /// Count the pixels of an `rgb8` image.
    pub fn add(&mut self, rgb: &[u8]) {
        let h = &mut self.0;
        for p in rgb.chunks_exact(3) {
            h[0][p[0] as usize] += 1;
            h[1][p[1] as usize] += 1;
            h[2][p[2] as usize] += 1;
        }
    }
}

/// What an encoded video holds.
#[derive(Debug, Clone)]
pub struct VideoSummary {
    /// Frames written.
    pub frames: usize,
    /// Bytes of the file.
    pub bytes: u64,
    /// Pixel histograms over every frame.
    pub histogram: Histogram,
    /// Time spent converting and encoding (s), for the throughput figure.
    pub encode_s: f64,
}

/// Convert `rgb8` (`w`×`h`, both even) to I420 planes: BT.601 limited range, rounded; chroma
/// from the 2×2 block's mean.
pub fn rgb_to_i420(rgb: &[u8], w: usize, h: usize, y: &mut [u8], u: &mut [u8], v: &mut [u8]) {
    for row in 0..h {
        let src = &rgb[row * w * 3..(row + 1) * w * 3];
        let dst = &mut y[row * w..(row + 1) * w];
        for (d, p) in dst.iter_mut().zip(src.chunks_exact(3)) {
            let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
            *d = ((66 * r + 129 * g + 25 * b + 128) >> 8) as u8 + 16;
        }
    }
    let cw = w / 2;
    for cy in 0..h / 2 {
        let r0 = &rgb[(2 * cy) * w * 3..(2 * cy + 1) * w * 3];
        let r1 = &rgb[(2 * cy + 1) * w * 3..(2 * cy + 2) * w * 3];
        for cx in 0..cw {
            let mut s = [0i32; 3];
            for (k, sk) in s.iter_mut().enumerate() {
                let i = cx * 6 + k;
                *sk = r0[i] as i32 + r0[i + 3] as i32 + r1[i] as i32 + r1[i + 3] as i32;
            }
            // sums of 4: the coefficients carry the /4 in their shift
            let (r, g, b) = (s[0], s[1], s[2]);
            u[cy * cw + cx] = (((-38 * r - 74 * g + 112 * b + 512) >> 10) + 128) as u8;
            v[cy * cw + cx] = (((112 * r - 94 * g - 18 * b + 512) >> 10) + 128) as u8;
        }
    }
}

/// One camera's video being written: `path` with `.partial` appended until [`VideoWriter::finish`]
/// syncs it and renames it into place.
pub struct VideoWriter {
    path: PathBuf,
    partial: PathBuf,
    width: usize,
    height: usize,
    encoder: Encoder,
    mux: Mp4Writer<BufWriter<File>>,
    planes: (Vec<u8>, Vec<u8>, Vec<u8>),
    histogram: Histogram,
    annexb: Vec<u8>,
    encode_s: f64,
}

impl VideoWriter {
    /// Start `path` for `width`×`height` frames at `fps`.
    pub fn create(
        path: &Path,
        width: u32,
        height: u32,
        fps: u32,
        opts: VideoOptions,
    ) -> Result<Self, DatasetError> {
        if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            bail!("yuv420p needs an even width and height, not {width}x{height}");
        }
        if opts.gop == 0 || opts.qp > 51 {
            bail!("a GOP of at least 1 and a QP within 0..=51");
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let partial = crate::write::partial(path);
        let file =
            File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let mux = Mp4Writer::new(BufWriter::with_capacity(1 << 20, file), width, height, fps)?;
        let config = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            // buffer-based control held at one QP (with rate control off OpenH264 ignores the
            // range and codes at its built-in QP 26; the quality mode warns without frame skips)
            .rate_control_mode(RateControlMode::Bufferbased)
            .bitrate(openh264::encoder::BitRate::from_bps(50_000_000))
            .qp(QpRange::new(opts.qp, opts.qp))
            .adaptive_quantization(false)
            // a skipped frame would leave the video shorter than the parquet rows
            .skip_frames(false)
            .max_frame_rate(openh264::encoder::FrameRate::from_hz(fps as f32))
            .intra_frame_period(IntraFramePeriod::from_num_frames(opts.gop))
            .scene_change_detect(false)
            .background_detection(false)
            .num_threads(1)
            .vui(VuiConfig::bt601());
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| crate::invalid!("starting the H.264 encoder: {e}"))?;
        let (w, h) = (width as usize, height as usize);
        Ok(Self {
            path: path.to_path_buf(),
            partial,
            width: w,
            height: h,
            encoder,
            mux,
            planes: (vec![0; w * h], vec![0; w * h / 4], vec![0; w * h / 4]),
            histogram: Histogram::default(),
            annexb: Vec::new(),
            encode_s: 0.0,
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> usize {
        self.mux.samples()
    }

    /// Encode one `rgb8` frame.
    pub fn push(&mut self, rgb: &[u8]) -> Result<(), DatasetError> {
        let (w, h) = (self.width, self.height);
        if rgb.len() != w * h * 3 {
            bail!(
                "a frame of {} bytes in a {w}x{h} rgb8 video (expected {})",
                rgb.len(),
                w * h * 3
            );
        }
        let t0 = std::time::Instant::now();
        self.histogram.add(rgb);
        let (y, u, v) = &mut self.planes;
        rgb_to_i420(rgb, w, h, y, u, v);
        let yuv = YUVSlices::new((y, u, v), (w, h), (w, w / 2, w / 2));
        let bits = self
            .encoder
            .encode(&yuv)
            .map_err(|e| crate::invalid!("H.264 encoding failed: {e}"))?;
        if matches!(bits.frame_type(), FrameType::Skip | FrameType::Invalid) {
            bail!("the H.264 encoder skipped a frame");
        }
        self.annexb.clear();
        bits.write_vec(&mut self.annexb);
        let key = matches!(bits.frame_type(), FrameType::IDR | FrameType::I);
        self.mux.write_annexb(&self.annexb, key)?;
        self.encode_s += t0.elapsed().as_secs_f64();
        Ok(())
    }

    /// Write the index, sync the file and move it into place.
    pub fn finish(self) -> Result<VideoSummary, DatasetError> {
        let frames = self.mux.samples();
        let bytes = self.mux.bytes();
        let out = self.mux.finish()?;
        let file = out
            .into_inner()
            .map_err(|e| DatasetError::Io(e.into_error()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", self.partial.display()))?;
        drop(file);
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("renaming to {}", self.path.display()))?;
        Ok(VideoSummary {
            frames,
            bytes,
            histogram: self.histogram,
            encode_s: self.encode_s,
        })
    }

    /// Give up: remove the partial file.
    pub fn discard(self) {
        drop(self.mux);
        std::fs::remove_file(&self.partial).ok();
    }
}

/// Decode every frame of an H.264 MP4 (OpenH264's decoder): the number of pictures it gives,
/// for the validator to compare with the index and the episodes.
pub fn decoded_frames(bytes: &[u8]) -> Result<usize, DatasetError> {
    let s = crate::mp4::samples(bytes)?;
    let Some((sps, pps)) = &s.parameter_sets else {
        bail!("{}: only H.264 (avc1) videos are decoded here", s.codec);
    };
    let mut dec = openh264::decoder::Decoder::with_api_config(
        OpenH264API::from_source(),
        openh264::decoder::DecoderConfig::new(),
    )
    .map_err(|e| crate::invalid!("starting the H.264 decoder: {e}"))?;
    let start = [0u8, 0, 0, 1];
    let mut head = Vec::new();
    for ps in [sps, pps] {
        head.extend_from_slice(&start);
        head.extend_from_slice(ps);
    }
    let mut n = 0usize;
    let mut annexb = Vec::new();
    for (k, &(at, size)) in s.samples.iter().enumerate() {
        let sample = usize::try_from(at)
            .ok()
            .and_then(|a| bytes.get(a..a.checked_add(size as usize)?))
            .ok_or_else(|| crate::invalid!("sample {k} lies beyond the end of the file"))?;
        annexb.clear();
        if k == 0 {
            annexb.extend_from_slice(&head);
        }
        let mut rest = sample;
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let nal = rest
                .get(4..4 + len)
                .ok_or_else(|| crate::invalid!("sample {k}: a NAL unit cut short"))?;
            annexb.extend_from_slice(&start);
            annexb.extend_from_slice(nal);
            rest = &rest[4 + len..];
        }
        match dec.decode(&annexb) {
            Ok(Some(_)) => n += 1,
            Ok(None) => {}
            Err(e) => bail!("sample {k} does not decode: {e}"),
        }
    }
    n += dec
        .flush_remaining()
        .map_err(|e| crate::invalid!("flushing the decoder: {e}"))?
        .len();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_is_grey_and_colours_land_where_bt601_puts_them() {
        let (w, h) = (4, 2);
        let mut rgb = vec![128u8; w * h * 3];
        let (mut y, mut u, mut v) = (vec![0; 8], vec![0; 2], vec![0; 2]);
        rgb_to_i420(&rgb, w, h, &mut y, &mut u, &mut v);
        assert!(y.iter().all(|&x| x == 126));
        assert_eq!((u[0], v[0]), (128, 128));
        // pure red on the right block
        for row in 0..2 {
            for x in 2..4 {
                let i = (row * w + x) * 3;
                rgb[i..i + 3].copy_from_slice(&[255, 0, 0]);
            }
        }
        rgb_to_i420(&rgb, w, h, &mut y, &mut u, &mut v);
        assert_eq!(y[3], 82);
        assert_eq!((u[1], v[1]), (90, 240));
    }

    #[test]
    fn encodes_every_frame_into_a_playable_file() {
        let dir = std::env::temp_dir().join(format!("reachy-video-{}", std::process::id()));
        let path = dir.join("v.mp4");
        let (w, h) = (64u32, 48u32);
        let mut vw = VideoWriter::create(&path, w, h, 30, VideoOptions::default()).unwrap();
        for i in 0..10u8 {
            let rgb: Vec<u8> = (0..w * h * 3)
                .map(|k| (k as u8).wrapping_add(i * 7))
                .collect();
            vw.push(&rgb).unwrap();
        }
        assert!(vw.push(&[0; 5]).is_err());
        assert!(crate::write::partial(&path).exists());
        let s = vw.finish().unwrap();
        assert_eq!(s.frames, 10);
        assert_eq!(s.histogram.0[0].iter().sum::<u64>(), 10 * 64 * 48);
        let info = crate::mp4::parse(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!((info.codec.as_str(), info.frames), ("avc1", 10));
        assert!((info.duration - 10.0 / 30.0).abs() < 1e-9);
        assert_eq!(decoded_frames(&std::fs::read(&path).unwrap()).unwrap(), 10);
        assert!(!crate::write::partial(&path).exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
