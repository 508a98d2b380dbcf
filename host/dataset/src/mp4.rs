//! A minimal ISO-BMFF (MP4) muxer for one H.264 video track, and a reader of what a dataset's
//! validator needs from any MP4 (codec, size, sample count, duration).
//!
//! The writer streams samples into `mdat` as they are encoded (nothing held in memory but the
//! sample table), then writes `moov` at the end: one chunk per sample, a constant frame
//! duration, so sample `i` is presented at exactly `i / fps` (timescale `fps × 1000`, 1000 ticks
//! a frame). No B-frames (OpenH264 writes the baseline profile), so no `ctts` and no edit list.

use std::io::{Seek, SeekFrom, Write};

use crate::{bail, DatasetError};

fn put_box(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
}

fn full_box(out: &mut Vec<u8>, kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) {
    let mut b = Vec::with_capacity(body.len() + 4);
    b.extend_from_slice(&(((version as u32) << 24) | (flags & 0x00ff_ffff)).to_be_bytes());
    b.extend_from_slice(body);
    put_box(out, kind, &b);
}

fn u16s(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}
fn u32s(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_be_bytes());
}

/// The unity transformation matrix of `mvhd` and `tkhd`.
fn matrix(v: &mut Vec<u8>) {
    for x in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        u32s(v, x);
    }
}

/// Streams an H.264 track into an MP4 file.
pub struct Mp4Writer<W: Write + Seek> {
    out: W,
    width: u16,
    height: u16,
    timescale: u32,
    frame_ticks: u32,
    mdat_start: u64,
    offset: u64,
    sizes: Vec<u32>,
    offsets: Vec<u64>,
    sync: Vec<u32>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
}

impl<W: Write + Seek> Mp4Writer<W> {
    /// Start a file of `width`×`height` frames at `fps`.
    pub fn new(mut out: W, width: u32, height: u32, fps: u32) -> Result<Self, DatasetError> {
        if width == 0 || height == 0 || width > 8192 || height > 8192 || fps == 0 {
            bail!("video of {width}x{height} at {fps} fps is out of range");
        }
        let mut head = Vec::new();
        let mut ftyp = Vec::new();
        ftyp.extend_from_slice(b"isom");
        u32s(&mut ftyp, 0x200);
        for b in [b"isom", b"iso2", b"avc1", b"mp41"] {
            ftyp.extend_from_slice(b);
        }
        put_box(&mut head, b"ftyp", &ftyp);
        let mdat_start = head.len() as u64;
        // 64-bit mdat header: size patched at the end
        u32s(&mut head, 1);
        head.extend_from_slice(b"mdat");
        head.extend_from_slice(&0u64.to_be_bytes());
        out.write_all(&head)?;
        Ok(Self {
            out,
            width: width as u16,
            height: height as u16,
            timescale: fps * 1000,
            frame_ticks: 1000,
            mdat_start,
            offset: head.len() as u64,
            sizes: Vec::new(),
            offsets: Vec::new(),
            sync: Vec::new(),
            sps: None,
            pps: None,
        })
    }

    /// Samples written so far.
    pub fn samples(&self) -> usize {
        self.sizes.len()
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.offset
    }

    /// Append one access unit given as Annex-B NAL units (start codes). Parameter sets (SPS,
    /// PPS) go to the sample description; an intra picture (`key`, or one holding an IDR slice)
    /// is a sync sample.
    pub fn write_annexb(&mut self, annexb: &[u8], key: bool) -> Result<(), DatasetError> {
        let mut sample = Vec::with_capacity(annexb.len() + 16);
        let mut idr = key;
        for nal in nal_units(annexb) {
            let Some(&h) = nal.first() else { continue };
            match h & 0x1f {
                7 => set_once(&mut self.sps, nal, "SPS")?,
                8 => set_once(&mut self.pps, nal, "PPS")?,
                // access unit delimiters and SEI need not be kept
                9 | 6 => {}
                t => {
                    idr |= t == 5;
                    sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    sample.extend_from_slice(nal);
                }
            }
        }
        if sample.is_empty() {
            bail!("the encoder produced a frame without a picture");
        }
        if self.sizes.is_empty() && !idr {
            bail!("the first frame of a video must be a key frame");
        }
        self.out.write_all(&sample)?;
        self.offsets.push(self.offset);
        self.offset += sample.len() as u64;
        self.sizes.push(sample.len() as u32);
        if idr {
            self.sync.push(self.sizes.len() as u32);
        }
        Ok(())
    }

    /// Write the index (`moov`) and hand the output back (the caller syncs it).
    pub fn finish(mut self) -> Result<W, DatasetError> {
        let (Some(sps), Some(pps)) = (self.sps.take(), self.pps.take()) else {
            bail!("no frame was encoded (no parameter sets)");
        };
        if sps.len() < 4 {
            bail!("an SPS of {} bytes", sps.len());
        }
        let n = self.sizes.len() as u32;
        let duration = n as u64 * self.frame_ticks as u64;
        let duration32 = u32::try_from(duration)
            .map_err(|_| crate::invalid!("a video of {n} frames is too long for one file"))?;
        let mdat_size = self.offset - self.mdat_start;
        self.out.seek(SeekFrom::Start(self.mdat_start + 8))?;
        self.out.write_all(&mdat_size.to_be_bytes())?;
        self.out.seek(SeekFrom::End(0))?;

        // sample description: avc1 with its avcC
        let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
        u16s(&mut avcc, sps.len() as u16);
        avcc.extend_from_slice(&sps);
        avcc.push(1);
        u16s(&mut avcc, pps.len() as u16);
        avcc.extend_from_slice(&pps);
        let mut avc1 = vec![0u8; 6];
        u16s(&mut avc1, 1); // data reference index
        avc1.extend_from_slice(&[0u8; 16]);
        u16s(&mut avc1, self.width);
        u16s(&mut avc1, self.height);
        u32s(&mut avc1, 0x0048_0000);
        u32s(&mut avc1, 0x0048_0000);
        u32s(&mut avc1, 0);
        u16s(&mut avc1, 1); // frames per sample
        let mut name = [0u8; 32];
        let label = b"reachy openh264";
        name[0] = label.len() as u8;
        name[1..=label.len()].copy_from_slice(label);
        avc1.extend_from_slice(&name);
        u16s(&mut avc1, 0x18);
        u16s(&mut avc1, 0xffff);
        put_box(&mut avc1, b"avcC", &avcc);
        let mut stsd = Vec::new();
        u32s(&mut stsd, 1);
        put_box(&mut stsd, b"avc1", &avc1);

        let mut stbl = Vec::new();
        full_box(&mut stbl, b"stsd", 0, 0, &stsd);
        let mut stts = Vec::new();
        u32s(&mut stts, 1);
        u32s(&mut stts, n);
        u32s(&mut stts, self.frame_ticks);
        full_box(&mut stbl, b"stts", 0, 0, &stts);
        let mut stss = Vec::new();
        u32s(&mut stss, self.sync.len() as u32);
        for &s in &self.sync {
            u32s(&mut stss, s);
        }
        full_box(&mut stbl, b"stss", 0, 0, &stss);
        let mut stsc = Vec::new();
        for x in [1u32, 1, 1, 1] {
            u32s(&mut stsc, x);
        }
        full_box(&mut stbl, b"stsc", 0, 0, &stsc);
        let mut stsz = Vec::new();
        u32s(&mut stsz, 0);
        u32s(&mut stsz, n);
        for &s in &self.sizes {
            u32s(&mut stsz, s);
        }
        full_box(&mut stbl, b"stsz", 0, 0, &stsz);
        let mut co64 = Vec::new();
        u32s(&mut co64, n);
        for &o in &self.offsets {
            co64.extend_from_slice(&o.to_be_bytes());
        }
        full_box(&mut stbl, b"co64", 0, 0, &co64);

        let mut minf = Vec::new();
        full_box(&mut minf, b"vmhd", 0, 1, &[0u8; 8]);
        let mut dref = Vec::new();
        u32s(&mut dref, 1);
        full_box(&mut dref, b"url ", 0, 1, &[]);
        let mut dinf = Vec::new();
        full_box(&mut dinf, b"dref", 0, 0, &dref);
        put_box(&mut minf, b"dinf", &dinf);
        put_box(&mut minf, b"stbl", &stbl);

        let mut mdia = Vec::new();
        let mut mdhd = Vec::new();
        u32s(&mut mdhd, 0);
        u32s(&mut mdhd, 0);
        u32s(&mut mdhd, self.timescale);
        u32s(&mut mdhd, duration32);
        u16s(&mut mdhd, 0x55c4); // "und"
        u16s(&mut mdhd, 0);
        full_box(&mut mdia, b"mdhd", 0, 0, &mdhd);
        let mut hdlr = vec![0u8; 4];
        hdlr.extend_from_slice(b"vide");
        hdlr.extend_from_slice(&[0u8; 12]);
        hdlr.extend_from_slice(b"VideoHandler\0");
        full_box(&mut mdia, b"hdlr", 0, 0, &hdlr);
        put_box(&mut mdia, b"minf", &minf);

        let mut tkhd = Vec::new();
        u32s(&mut tkhd, 0);
        u32s(&mut tkhd, 0);
        u32s(&mut tkhd, 1); // track id
        u32s(&mut tkhd, 0);
        u32s(&mut tkhd, duration32);
        tkhd.extend_from_slice(&[0u8; 8]);
        u16s(&mut tkhd, 0); // layer
        u16s(&mut tkhd, 0); // alternate group
        u16s(&mut tkhd, 0); // volume
        u16s(&mut tkhd, 0);
        matrix(&mut tkhd);
        u32s(&mut tkhd, (self.width as u32) << 16);
        u32s(&mut tkhd, (self.height as u32) << 16);
        let mut trak = Vec::new();
        full_box(&mut trak, b"tkhd", 0, 3, &tkhd);
        put_box(&mut trak, b"mdia", &mdia);

        let mut mvhd = Vec::new();
        u32s(&mut mvhd, 0);
        u32s(&mut mvhd, 0);
        u32s(&mut mvhd, self.timescale);
        u32s(&mut mvhd, duration32);
        u32s(&mut mvhd, 0x0001_0000); // rate
        u16s(&mut mvhd, 0x0100); // volume
        mvhd.extend_from_slice(&[0u8; 10]);
        matrix(&mut mvhd);
        mvhd.extend_from_slice(&[0u8; 24]);
        u32s(&mut mvhd, 2); // next track id
        let mut moov = Vec::new();
        full_box(&mut moov, b"mvhd", 0, 0, &mvhd);
        put_box(&mut moov, b"trak", &trak);
        let mut out = Vec::new();
        put_box(&mut out, b"moov", &moov);
        self.out.write_all(&out)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn set_once(slot: &mut Option<Vec<u8>>, nal: &[u8], what: &str) -> Result<(), DatasetError> {
    match slot {
        None => {
            *slot = Some(nal.to_vec());
            Ok(())
        }
        Some(s) if s == nal => Ok(()),
        Some(_) => bail!("the encoder changed its {what} within one video"),
    }
}

/// The NAL units of an Annex-B byte stream (start codes `00 00 01` / `00 00 00 01` removed).
pub fn nal_units(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= b.len() {
        if b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // the next start code, with its optional leading zero
            let mut e = s - 3;
            while e > 0 && b[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain(std::iter::once(b.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(s, e)| &b[s..e.max(s)])
}

/// What a dataset's validator reads from an MP4 file's first video track.
#[derive(Debug, Clone, PartialEq)]
pub struct Mp4Info {
    /// Sample entry of the track: `avc1` (H.264), `av01` (AV1), `hvc1`/`hev1` (HEVC), …
    pub codec: String,
    /// Width and height of the sample entry (pixels).
    pub width: u32,
    /// Height (pixels).
    pub height: u32,
    /// Number of samples (frames).
    pub frames: u64,
    /// Track duration (s), from the media header.
    pub duration: f64,
    /// Media timescale (ticks per second).
    pub timescale: u32,
}

/// Boxes of a byte range: (type, body).
type Boxes<'a> = Vec<([u8; 4], &'a [u8])>;

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The boxes of `self.b`: (type, body).
    fn boxes(&self) -> Result<Boxes<'a>, DatasetError> {
        let mut out = Vec::new();
        let mut i = 0usize;
        let b = self.b;
        while i < b.len() {
            if b.len() - i < 8 {
                bail!("a truncated box header at byte {i}");
            }
            let size32 = u32::from_be_bytes(b[i..i + 4].try_into().expect("4 bytes")) as u64;
            let kind: [u8; 4] = b[i + 4..i + 8].try_into().expect("4 bytes");
            let (size, header) = match size32 {
                0 => ((b.len() - i) as u64, 8u64),
                1 => {
                    if b.len() - i < 16 {
                        bail!("a truncated box header at byte {i}");
                    }
                    (
                        u64::from_be_bytes(b[i + 8..i + 16].try_into().expect("8 bytes")),
                        16,
                    )
                }
                s => (s, 8),
            };
            if size < header || size > (b.len() - i) as u64 {
                bail!(
                    "box `{}` at byte {i} claims {size} bytes, {} remain (a truncated file?)",
                    String::from_utf8_lossy(&kind),
                    b.len() - i
                );
            }
            out.push((kind, &b[i + header as usize..i + size as usize]));
            i += size as usize;
        }
        Ok(out)
    }
}

fn find<'a>(boxes: &[([u8; 4], &'a [u8])], kind: &[u8; 4]) -> Result<&'a [u8], DatasetError> {
    boxes
        .iter()
        .find(|(k, _)| k == kind)
        .map(|(_, b)| *b)
        .ok_or_else(|| crate::invalid!("no `{}` box", String::from_utf8_lossy(kind)))
}

fn be32(b: &[u8], at: usize) -> Result<u32, DatasetError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| crate::invalid!("a box too short to read"))
}

fn be64(b: &[u8], at: usize) -> Result<u64, DatasetError> {
    b.get(at..at + 8)
        .map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| crate::invalid!("a box too short to read"))
}

/// The coded frames of the first video track: where each sample is, and the H.264 parameter
/// sets when the track is `avc1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Sample entry (`avc1`, `av01`, …).
    pub codec: String,
    /// SPS and PPS of an `avc1` track's `avcC`.
    pub parameter_sets: Option<(Vec<u8>, Vec<u8>)>,
    /// (offset in the file, size) of every sample, in decoding order.
    pub samples: Vec<(u64, u32)>,
}

/// The first video track's media boxes (`mdia`) and sample table (`stbl`).
fn video_track(bytes: &[u8]) -> Result<(Boxes<'_>, Boxes<'_>), DatasetError> {
    let top = Reader { b: bytes }.boxes()?;
    let moov = Reader {
        b: find(&top, b"moov")?,
    }
    .boxes()?;
    for (kind, trak) in &moov {
        if kind != b"trak" {
            continue;
        }
        let trak = Reader { b: trak }.boxes()?;
        let mdia = Reader {
            b: find(&trak, b"mdia")?,
        }
        .boxes()?;
        if find(&mdia, b"hdlr")?.get(8..12) != Some(b"vide") {
            continue;
        }
        let minf = Reader {
            b: find(&mdia, b"minf")?,
        }
        .boxes()?;
        let stbl = Reader {
            b: find(&minf, b"stbl")?,
        }
        .boxes()?;
        return Ok((mdia, stbl));
    }
    bail!("no video track")
}

/// The first sample description of a sample table: (codec, entry body).
fn sample_entry<'a>(stbl: &Boxes<'a>) -> Result<([u8; 4], &'a [u8]), DatasetError> {
    let stsd = find(stbl, b"stsd")?;
    let entries = Reader {
        b: stsd.get(8..).unwrap_or_default(),
    }
    .boxes()?;
    entries
        .first()
        .copied()
        .ok_or_else(|| crate::invalid!("a video track without a sample description"))
}

/// Where the samples of the first video track are (`stsz`, `stsc`, `stco`/`co64`), and its
/// H.264 parameter sets. Any bytes give a result or an error, never a panic.
pub fn samples(bytes: &[u8]) -> Result<Samples, DatasetError> {
    let (_, stbl) = video_track(bytes)?;
    let (codec, entry) = sample_entry(&stbl)?;
    let mut parameter_sets = None;
    if &codec == b"avc1" {
        // the visual sample entry's 78 bytes, then its boxes
        let children = Reader {
            b: entry.get(78..).unwrap_or_default(),
        }
        .boxes()?;
        let c = find(&children, b"avcC")?;
        let sps_len = c
            .get(6..8)
            .map(|s| u16::from_be_bytes([s[0], s[1]]) as usize);
        let sps = sps_len.and_then(|n| c.get(8..8 + n));
        let pps = sps_len.and_then(|n| {
            let at = 8 + n + 1;
            let m = c
                .get(at..at + 2)
                .map(|s| u16::from_be_bytes([s[0], s[1]]) as usize)?;
            c.get(at + 2..at + 2 + m)
        });
        match (sps, pps) {
            (Some(a), Some(b)) => parameter_sets = Some((a.to_vec(), b.to_vec())),
            _ => bail!("a truncated avcC"),
        }
    }
    let stsz = find(&stbl, b"stsz")?;
    let (fixed, count) = (be32(stsz, 4)?, be32(stsz, 8)? as usize);
    if count > bytes.len() {
        bail!(
            "stsz claims {count} samples in a file of {} bytes",
            bytes.len()
        );
    }
    let sizes: Vec<u32> = if fixed != 0 {
        vec![fixed; count]
    } else {
        (0..count)
            .map(|k| be32(stsz, 12 + 4 * k))
            .collect::<Result<_, _>>()?
    };
    let chunks: Vec<u64> = if let Ok(co) = find(&stbl, b"co64") {
        let n = (be32(co, 4)? as usize).min(co.len() / 8);
        (0..n)
            .map(|k| be64(co, 8 + 8 * k))
            .collect::<Result<_, _>>()?
    } else {
        let co = find(&stbl, b"stco")?;
        let n = (be32(co, 4)? as usize).min(co.len() / 4);
        (0..n)
            .map(|k| be32(co, 8 + 4 * k).map(u64::from))
            .collect::<Result<_, _>>()?
    };
    // stsc: runs of chunks with the same number of samples
    let stsc = find(&stbl, b"stsc")?;
    let runs = (be32(stsc, 4)? as usize).min(stsc.len() / 12);
    let mut per_chunk = vec![0u32; chunks.len()];
    for r in 0..runs {
        let first = be32(stsc, 8 + 12 * r)? as usize;
        let n = be32(stsc, 12 + 12 * r)?;
        let next = if r + 1 < runs {
            be32(stsc, 8 + 12 * (r + 1))? as usize
        } else {
            chunks.len() + 1
        };
        for c in first.max(1)..next.min(chunks.len() + 1) {
            per_chunk[c - 1] = n;
        }
    }
    let mut samples = Vec::with_capacity(count);
    let mut k = 0usize;
    for (c, &offset) in chunks.iter().enumerate() {
        let mut at = offset;
        for _ in 0..per_chunk[c] {
            let Some(&size) = sizes.get(k) else { break };
            samples.push((at, size));
            at = at.saturating_add(size as u64);
            k += 1;
        }
    }
    if samples.len() != count {
        bail!(
            "the chunk tables place {} of {count} samples",
            samples.len()
        );
    }
    Ok(Samples {
        codec: String::from_utf8_lossy(&codec).into_owned(),
        parameter_sets,
        samples,
    })
}

/// Read the first video track of an MP4 file (its bytes: the whole file, or at least every box
/// up to and including `moov`). Any bytes give a result or an error, never a panic.
pub fn parse(bytes: &[u8]) -> Result<Mp4Info, DatasetError> {
    let (mdia, stbl) = video_track(bytes)?;
    let mdhd = find(&mdia, b"mdhd")?;
    let (timescale, duration) = match mdhd.first() {
        Some(1) => (be32(mdhd, 20)?, be64(mdhd, 24)?),
        Some(0) => (be32(mdhd, 12)?, be32(mdhd, 16)? as u64),
        _ => bail!("an `mdhd` of an unknown version"),
    };
    if timescale == 0 {
        bail!("a media timescale of 0");
    }
    let (codec, entry) = sample_entry(&stbl)?;
    let u16_at = |at: usize| {
        entry
            .get(at..at + 2)
            .map_or(0, |s| u16::from_be_bytes([s[0], s[1]]))
    };
    let frames = if let Ok(stsz) = find(&stbl, b"stsz") {
        be32(stsz, 8)? as u64
    } else {
        let stz2 = find(&stbl, b"stz2")?;
        be32(stz2, 8)? as u64
    };
    Ok(Mp4Info {
        codec: String::from_utf8_lossy(&codec).into_owned(),
        width: u16_at(24) as u32,
        height: u16_at(26) as u32,
        frames,
        duration: duration as f64 / timescale as f64,
        timescale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_annexb_into_nal_units() {
        let b = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5,
        ];
        let nals: Vec<&[u8]> = nal_units(&b).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
    }

    #[test]
    fn writes_what_it_reads_back() {
        let mut w = Mp4Writer::new(std::io::Cursor::new(Vec::new()), 64, 48, 30).unwrap();
        let sps = [0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 9];
        let pps = [0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80];
        let mut first = sps.to_vec();
        first.extend_from_slice(&pps);
        first.extend_from_slice(&[0, 0, 0, 1, 0x65, 1, 2, 3]);
        w.write_annexb(&first, false).unwrap();
        w.write_annexb(&[0, 0, 0, 1, 0x41, 7, 7], false).unwrap();
        assert!(w
            .write_annexb(&[0, 0, 0, 1, 0x67, 0x4d, 0, 0], false)
            .is_err());
        let bytes = w.finish().unwrap().into_inner();
        let info = parse(&bytes).unwrap();
        assert_eq!(
            info,
            Mp4Info {
                codec: "avc1".into(),
                width: 64,
                height: 48,
                frames: 2,
                duration: 2.0 / 30.0,
                timescale: 30_000,
            }
        );
        // a truncated file is an error that says so
        let e = parse(&bytes[..bytes.len() - 10]).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
        ))]
        /// Foreign bytes never panic the reader: random, and mutations of a valid file.
        #[test]
        fn parse_never_panics(noise in proptest::collection::vec(any::<u8>(), 0..512),
                              flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
                              cut in any::<usize>()) {
            let _ = parse(&noise);
            let _ = samples(&noise);
            let mut w = Mp4Writer::new(std::io::Cursor::new(Vec::new()), 64, 48, 30).unwrap();
            w.write_annexb(&[0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0, 0, 1, 0x68, 1, 0, 0, 1, 0x65, 1], true).unwrap();
            let mut b = w.finish().unwrap().into_inner();
            for (at, x) in flips {
                let n = b.len();
                b[at % n] = x;
            }
            b.truncate(cut % (b.len() + 1));
            let _ = parse(&b);
            let _ = samples(&b);
        }
    }
}
