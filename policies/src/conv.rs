//! A faster CPU convolution for the ResNet backbone: NCHW, f32, bias (folded batch-norm) and an
//! optional fused ReLU — `out[Cout, OH·OW] = W[Cout, C·k·k] × cols[C·k·k, OH·OW]`, the output
//! pixels cut into tiles (whole panels of the kernel, the im2col block in L2) that the threads
//! share out: each tile fills its bias, writes its im2col block straight into the kernel's
//! panels, multiplies and applies the ReLU while the tile is in cache. Every im2col row is a run
//! of contiguous input pixels (strided convolutions read the input split by column phase) and
//! the product lands directly in NCHW (no transposes); 1×1 stride-1 convolutions read the input
//! as it is. Without the crate's kernels (`REACHY_CPU_KERNEL=off`) the `gemm` crate multiplies;
//! other devices and dtypes use candle's own `conv2d`.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::linear::{Isa, Packed, PanelStore, PanelWriter, SendPtr};

/// Convolution geometry and parameters.
pub(crate) struct ConvOp {
    pub w: Vec<f32>, // (cout, cin, k, k) row-major
    pub b: Vec<f32>, // (cout)
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub relu: bool,
    /// `w` packed for the CPU kernel of `isa` (`linear::pack_rows`); `None`: `gemm`'s kernels.
    w_packed: Option<(Isa, Vec<f32>)>,
    /// 3×3 stride-1 convolutions on the crate's kernel: Winograd, its tile from [`winograd_tile`].
    winograd: Option<Box<crate::winograd::Kernels>>,
}

/// Which Winograd tile 3×3 stride-1 convolutions of `cin → cout` channels use:
/// F(4×4, 3×3) for the shallow, wide-image layers (its 36 transformed kernels stay small, its
/// tiles many), F(2×2, 3×3) for the deep ones. `REACHY_CONV_WINOGRAD=off` (im2col, to compare),
/// `=f2` or `=f4` choose for every layer; read once per process.
fn winograd_tile(cin: usize, cout: usize) -> Option<crate::winograd::Tile> {
    use crate::winograd::Tile;
    static CHOICE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    match CHOICE
        .get_or_init(|| std::env::var("REACHY_CONV_WINOGRAD").unwrap_or_default())
        .as_str()
    {
        "off" => None,
        "f2" => Some(Tile::F2),
        "f4" => Some(Tile::F4),
        _ if cin * cout <= 128 * 128 => Some(Tile::F4),
        _ => Some(Tile::F2),
    }
}

impl ConvOp {
    /// A convolution of `w` (cout, cin, k, k) row-major and bias `b` (cout), its weights packed
    /// for `isa`'s kernel (`None`: the `gemm` crate's).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        w: Vec<f32>,
        b: Vec<f32>,
        (cin, cout, k): (usize, usize, usize),
        (stride, pad, dil): (usize, usize, usize),
        relu: bool,
        isa: Option<Isa>,
    ) -> Self {
        let w_packed = isa.map(|isa| (isa, crate::linear::pack_rows(&w, cout, cin * k * k, isa)));
        let winograd = isa
            .filter(|_| k == 3 && stride == 1 && dil == 1)
            .and_then(|isa| Some((isa, winograd_tile(cin, cout)?)))
            .map(|(isa, tile)| {
                Box::new(crate::winograd::Kernels::new(&w, cin, cout, pad, tile, isa))
            });
        Self {
            w,
            b,
            cin,
            cout,
            k,
            stride,
            pad,
            dil,
            relu,
            w_packed,
            winograd,
        }
    }

    fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let span = self.dil * (self.k - 1) + 1;
        (
            (h + 2 * self.pad - span) / self.stride + 1,
            (w + 2 * self.pad - span) / self.stride + 1,
        )
    }

    /// The phases of the input columns that the kernel reads (`(kx·dil − pad) mod stride`
    /// for every kx): `slot[q]` is phase q's place in [`Self::phases`]' split, or `None`.
    fn phase_slots(&self) -> Vec<Option<usize>> {
        let s = self.stride;
        let mut slot = vec![None; s];
        let mut used = 0;
        for kx in 0..self.k {
            let q = ((kx * self.dil) as isize - self.pad as isize).rem_euclid(s as isize) as usize;
            if slot[q].is_none() {
                slot[q] = Some(used);
                used += 1;
            }
        }
        slot
    }

    /// `x` [C, H, W] split by input column modulo the stride: [C, phases, H, ⌈W / stride⌉],
    /// phase `q` (at its [`Self::phase_slots`] place) holding columns `q, q + stride, …` —
    /// every strided gather of im2col becomes a contiguous run. Stride 1: `x` itself.
    fn phases<'x>(&self, x: &'x [f32], h: usize, w: usize) -> std::borrow::Cow<'x, [f32]> {
        let s = self.stride;
        if s == 1 {
            return x.into();
        }
        let slots = self.phase_slots();
        let used = slots.iter().flatten().count();
        let wp = w.div_ceil(s);
        let mut out = vec![0f32; self.cin * used * h * wp];
        let split = |(c, dst): (usize, &mut [f32])| {
            for (iy, src) in x[c * h * w..(c + 1) * h * w].chunks(w).enumerate() {
                for (q, slot) in slots.iter().enumerate() {
                    let Some(slot) = slot else { continue };
                    let row = &mut dst[(slot * h + iy) * wp..][..wp];
                    for (d, v) in row.iter_mut().zip(src[q..].iter().step_by(s)) {
                        *d = *v;
                    }
                }
            }
        };
        if candle_core::utils::get_num_threads() > 1 {
            use rayon::prelude::*;
            out.par_chunks_mut(used * h * wp)
                .enumerate()
                .for_each(split);
        } else {
            out.chunks_mut(used * h * wp).enumerate().for_each(split);
        }
        out.into()
    }

    /// im2col of the output pixels `px` (row-major over OH × OW) into `cols` ([C·k·k,
    /// px.len()]: row-major, or straight into the CPU kernel's panels); `x` as
    /// [`Self::phases`] split it.
    fn im2col(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        px: std::ops::Range<usize>,
        cols: &mut impl Sink,
    ) {
        let (_, ow) = self.out_hw(h, w);
        let (k, s, d) = (self.k, self.stride, self.dil);
        let (s_i, p_i) = (s as isize, self.pad as isize);
        let oy_range = px.start / ow..px.end.div_ceil(ow);
        let wp = w.div_ceil(s);
        let slots = self.phase_slots();
        let used = slots.iter().flatten().count();
        for c in 0..self.cin {
            let planes = &x[c * used * h * wp..(c + 1) * used * h * wp];
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    let x0 = (kx * d) as isize - p_i;
                    // the output columns whose input column ox·s + x0 lies inside 0..w
                    let first = ((-x0).max(0) as usize).div_ceil(s);
                    let past = ((w as isize - x0).max(0) as usize).div_ceil(s);
                    for oy in oy_range.clone() {
                        // this row's part of the tile: columns a..b, at `at` in the tile
                        let a = px.start.max(oy * ow) - oy * ow;
                        let b = px.end.min((oy + 1) * ow) - oy * ow;
                        let at = oy * ow + a - px.start;
                        let iy = (oy * s + ky * d) as isize - p_i;
                        if iy < 0 || iy >= h as isize {
                            cols.zero(row, at, b - a);
                            continue;
                        }
                        let lo = first.clamp(a, b);
                        let hi = past.clamp(lo, b);
                        cols.zero(row, at, lo - a);
                        if hi > lo {
                            // input columns i0, i0 + s, …: phase i0 % s from i0 / s on
                            let i0 = (lo as isize * s_i + x0) as usize;
                            let (q, j0) = if s == 1 { (0, i0) } else { (i0 % s, i0 / s) };
                            let slot = slots[q].expect("a phase the kernel reads");
                            let plane = &planes[slot * h * wp..][..h * wp];
                            let src = &plane[iy as usize * wp..][..wp];
                            cols.put(row, at + lo - a, &src[j0..j0 + (hi - lo)]);
                        }
                        cols.zero(row, at + hi - a, b - hi);
                    }
                }
            }
        }
    }
}

/// Where im2col writes a [rows, n] matrix: row-major, or the CPU kernel's panels.
trait Sink {
    fn put(&mut self, row: usize, col: usize, vals: &[f32]);
    fn zero(&mut self, row: usize, col: usize, len: usize);
}

/// A row-major [rows, n] matrix.
struct RowMajor<'a> {
    m: &'a mut [f32],
    n: usize,
}

impl Sink for RowMajor<'_> {
    fn put(&mut self, row: usize, col: usize, vals: &[f32]) {
        self.m[row * self.n + col..][..vals.len()].copy_from_slice(vals);
    }
    fn zero(&mut self, row: usize, col: usize, len: usize) {
        self.m[row * self.n + col..][..len].fill(0.0);
    }
}

impl Sink for PanelWriter<'_> {
    fn put(&mut self, row: usize, col: usize, vals: &[f32]) {
        PanelWriter::put(self, row, col, vals)
    }
    fn zero(&mut self, row: usize, col: usize, len: usize) {
        PanelWriter::zero(self, row, col, len)
    }
}

impl CustomOp1 for ConvOp {
    fn name(&self) -> &'static str {
        "reachy-conv2d"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, (b, c, h, w)) = nchw_f32(self.name(), storage, layout)?;
        if c != self.cin {
            candle_core::bail!("reachy-conv2d: {c} input channels, expected {}", self.cin)
        }
        let (oh, ow) = self.out_hw(h, w);
        let n = oh * ow;
        if let Some(wk) = &self.winograd {
            let mut out = vec![0f32; b * self.cout * n];
            for (xi, o) in x
                .chunks_exact(c * h * w)
                .zip(out.chunks_exact_mut(self.cout * n))
            {
                wk.run(xi, h, w, &self.b, self.relu, o);
            }
            return Ok((CpuStorage::F32(out), Shape::from((b, self.cout, oh, ow))));
        }
        let kk = self.cin * self.k * self.k;
        let direct = self.k == 1 && self.stride == 1 && self.pad == 0;
        let threads = candle_core::utils::get_num_threads();
        let isa = self.w_packed.as_ref().map(|p| p.0);
        // tile the output pixels so the im2col block stays in L2 beside the output tile (~128 K floats), in whole
        // panels of the kernel (a last partial panel only at the end of the image)
        let nr = isa.map_or(16, Isa::nr);
        let per_tile = ((128 * 1024 / kk) / nr * nr).clamp(nr, n.next_multiple_of(nr));
        let tiles: Vec<(usize, usize)> = (0..n)
            .step_by(per_tile)
            .map(|p0| (p0, (p0 + per_tile).min(n)))
            .collect();
        let mut out = vec![0f32; b * self.cout * n];
        for bi in 0..b {
            let xi = &x[bi * c * h * w..(bi + 1) * c * h * w];
            let xs = self.phases(xi, h, w);
            let dst = &mut out[bi * self.cout * n..(bi + 1) * self.cout * n];
            let dst_ptr = SendPtr(dst.as_mut_ptr());
            let tile = |&(p0, p1): &(usize, usize), par: gemm::Parallelism| {
                let tn = p1 - p0;
                // SAFETY: dst is [cout, n]; this tile touches only columns p0..p1 of each
                // row, disjoint from every other tile.
                let rows = |f: &dyn Fn(&mut [f32], f32)| unsafe {
                    for (co, bias) in self.b.iter().enumerate() {
                        let r = std::slice::from_raw_parts_mut(dst_ptr.get().add(co * n + p0), tn);
                        f(r, *bias)
                    }
                };
                rows(&|r, bias| r.fill(bias));
                // SAFETY: columns p0..p1 of dst's cout rows (stride n) are this tile's alone
                let at = SendPtr(unsafe { dst_ptr.get().add(p0) });
                if let Some(isa) = isa {
                    PANELS.with(|store| {
                        let mut store = store.borrow_mut();
                        // the im2col block (or the input itself, 1×1) as the right-hand side,
                        // written straight into this CPU's kernel panels
                        let b = Packed::filled(kk, tn, isa, &mut store, |cols| {
                            if direct {
                                for c in 0..kk {
                                    cols.put(c, 0, &xi[c * n + p0..c * n + p1]);
                                }
                            } else {
                                self.im2col(&xs, h, w, p0..p1, cols);
                            }
                        });
                        let parallel = matches!(par, gemm::Parallelism::Rayon(_));
                        // SAFETY: `at` holds cout rows of tn floats at stride n, this tile's.
                        unsafe {
                            b.accumulate(
                                &self.w,
                                self.cout,
                                self.w_packed.as_ref().map(|p| &p.1[..]),
                                at,
                                n,
                                parallel,
                            )
                        };
                        *store = b.into_store();
                    });
                } else {
                    SCRATCH.with(|scratch| {
                        let mut cols = scratch.borrow_mut();
                        if cols.len() < kk * tn {
                            cols.resize(kk * tn, 0.0);
                        }
                        let m = &mut cols[..kk * tn];
                        if direct {
                            for (c, r) in m.chunks_mut(tn).enumerate() {
                                r.copy_from_slice(&xi[c * n + p0..c * n + p1]);
                            }
                        } else {
                            self.im2col(&xs, h, w, p0..p1, &mut RowMajor { m, n: tn });
                        }
                        // SAFETY: `at` holds cout rows of tn floats at stride n, this tile's;
                        // lhs is [cout, kk] and rhs [kk, tn], both row-major and in bounds.
                        unsafe {
                            gemm::gemm(
                                self.cout,
                                tn,
                                kk,
                                at.get(),
                                1,
                                n as isize,
                                true,
                                self.w.as_ptr(),
                                1,
                                kk as isize,
                                cols.as_ptr(),
                                1,
                                tn as isize,
                                1.0,
                                1.0,
                                false,
                                false,
                                false,
                                par,
                            );
                        }
                    });
                }
                if self.relu {
                    rows(&|r, _| r.iter_mut().for_each(|v| *v = v.max(0.0)));
                }
            };
            if threads > 1 && tiles.len() >= threads {
                // one tile per task: im2col and gemm of a tile stay on one core
                use rayon::prelude::*;
                tiles
                    .par_iter()
                    .for_each(|t| tile(t, gemm::Parallelism::None));
            } else {
                let par = if threads > 1 {
                    gemm::Parallelism::Rayon(threads)
                } else {
                    gemm::Parallelism::None
                };
                tiles.iter().for_each(|t| tile(t, par));
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, self.cout, oh, ow))))
    }
}

/// Batch, channels, height, width.
type Nchw = (usize, usize, usize, usize);

/// The input of a CPU op as a contiguous NCHW f32 slice and its dimensions.
fn nchw_f32<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<(&'a [f32], Nchw)> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 only")
    };
    let dims = layout.shape().dims4()?;
    let Some((o1, o2)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: input must be contiguous")
    };
    Ok((&data[o1..o2], dims))
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static PANELS: std::cell::RefCell<PanelStore> = std::cell::RefCell::new(PanelStore::default());
}

/// Max-pool 3×3, stride 2, padding 1 (torchvision's ResNet stem), NCHW f32 on the CPU.
pub(crate) struct MaxPool3s2;

impl CustomOp1 for MaxPool3s2 {
    fn name(&self) -> &'static str {
        "reachy-maxpool3s2"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, (b, c, h, w)) = nchw_f32(self.name(), storage, layout)?;
        let (oh, ow) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
        let mut out = vec![0f32; b * c * oh * ow];
        // separable: each output row's max over its three input rows (vectorised), then over
        // columns 2·ox − 1 … 2·ox + 1 of that; the planes shared out among the threads
        let pool = |(plane, o): (&[f32], &mut [f32])| {
            let mut v = vec![0f32; w];
            for (oy, o) in o.chunks_mut(ow).enumerate() {
                let y0 = (2 * oy).saturating_sub(1);
                v.copy_from_slice(&plane[y0 * w..(y0 + 1) * w]);
                for iy in y0 + 1..(2 * oy + 2).min(h) {
                    for (m, x) in v.iter_mut().zip(&plane[iy * w..(iy + 1) * w]) {
                        *m = m.max(*x);
                    }
                }
                o[0] = v[..2.min(w)]
                    .iter()
                    .fold(f32::NEG_INFINITY, |m, x| m.max(*x));
                for (ox, m) in o.iter_mut().enumerate().skip(1) {
                    let c = 2 * ox;
                    *m = if c + 1 < w {
                        v[c - 1].max(v[c]).max(v[c + 1])
                    } else {
                        v[c - 1].max(v[c])
                    };
                }
            }
        };
        let planes = x.chunks(h * w).zip(out.chunks_mut(oh * ow));
        if candle_core::utils::get_num_threads() > 1 {
            use rayon::prelude::*;
            x.par_chunks(h * w)
                .zip(out.par_chunks_mut(oh * ow))
                .for_each(pool);
        } else {
            planes.for_each(pool);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }
}

/// Run `op` on `x` (contiguous NCHW f32 on the CPU).
pub(crate) fn conv(x: &Tensor, op: &ConvOp) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Every kernel this CPU has, and `gemm`'s.
    fn isas() -> Vec<Option<Isa>> {
        let mut isas = vec![None];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Some(Isa::Avx512));
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                isas.push(Some(Isa::Avx2));
            }
        }
        isas
    }

    #[test]
    fn conv_equals_candles_conv2d_bias_relu() {
        let dev = Device::Cpu;
        // (batch, cin, h, w, cout, k, stride, pad, dil): the backbone's shapes, small, with
        // pixel tiles that end mid-row and mid-panel, strided borders, dilation and 1×1s
        for (b, cin, h, w, cout, k, s, p, d) in [
            (1, 3, 100, 90, 8, 7, 2, 3, 1),
            (2, 64, 30, 40, 20, 3, 1, 1, 1),
            (1, 64, 31, 29, 17, 3, 2, 1, 1),
            (1, 32, 20, 21, 9, 3, 1, 2, 2),
            (1, 256, 40, 40, 33, 1, 1, 0, 1),
            (1, 48, 15, 19, 50, 1, 2, 0, 1),
            (1, 5, 3, 4, 7, 3, 1, 1, 1),
            // Winograd's: odd sizes (half tiles at the borders), no padding, a 1×1 image,
            // blocks of tiles that end mid-row
            (1, 16, 9, 11, 24, 3, 1, 0, 1),
            (1, 8, 1, 1, 4, 3, 1, 1, 1),
            (2, 96, 37, 23, 70, 3, 1, 1, 1),
            // four blocks of tiles starting mid-row: on the threads when there are two or more
            (1, 64, 50, 66, 64, 3, 1, 1, 1),
        ] {
            let x = Tensor::randn(0f32, 1., (b, cin, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (cout, cin, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1., cout, &dev).unwrap();
            for relu in [false, true] {
                let mut want = x
                    .conv2d(&wt, p, s, d, 1)
                    .unwrap()
                    .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
                    .unwrap();
                if relu {
                    want = want.relu().unwrap();
                }
                let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for isa in isas() {
                    let mut op = ConvOp::new(
                        wt.flatten_all().unwrap().to_vec1().unwrap(),
                        bias.to_vec1().unwrap(),
                        (cin, cout, k),
                        (s, p, d),
                        relu,
                        isa,
                    );
                    // every algorithm this shape can take: im2col, and Winograd's two tiles
                    let mut ways = vec![None];
                    if op.winograd.is_some() {
                        use crate::winograd::{Kernels, Tile};
                        for tile in [Tile::F2, Tile::F4] {
                            let isa = isa.expect("Winograd runs on the crate's kernel");
                            ways.push(Some(Box::new(Kernels::new(&op.w, cin, cout, p, tile, isa))));
                        }
                    }
                    for way in ways {
                        let name = way.as_ref().map(|k| k.tile());
                        op.winograd = way;
                        let got = conv(&x, &op).unwrap();
                        let (oh, ow) = op.out_hw(h, w);
                        assert_eq!(got.dims(), [b, cout, oh, ow]);
                        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                        let worst = got
                            .iter()
                            .zip(&want)
                            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                        let kk = (cin * k * k) as f32;
                        // F(4×4, 3×3)'s transforms (coefficients up to 8 and 1/24) round
                        // several times more than a dot product: up to ~14× here
                        let slack = if name == Some(crate::winograd::Tile::F4) {
                            16.0
                        } else {
                            4.0
                        };
                        assert!(
                            worst <= 1e-5 * kk.sqrt() * slack,
                            "{isa:?} {name:?} {cin}×{h}×{w} k{k} s{s} p{p} d{d} → {cout}: {worst}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn max_pool_equals_the_definition() {
        for (c, h, w) in [(3, 9, 12), (2, 8, 7), (1, 1, 1), (4, 2, 3)] {
            let x = Tensor::randn(0f32, 1., (1, c, h, w), &Device::Cpu).unwrap();
            let got = x.apply_op1_no_bwd(&MaxPool3s2).unwrap();
            let (oh, ow) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
            assert_eq!(got.dims(), [1, c, oh, ow]);
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            // 3×3 window, stride 2, padding 1 (outside the image: never the max)
            for ci in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut m = f32::NEG_INFINITY;
                        for iy in (2 * oy) as isize - 1..=(2 * oy) as isize + 1 {
                            for ix in (2 * ox) as isize - 1..=(2 * ox) as isize + 1 {
                                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                    m = m.max(x[(ci * h + iy as usize) * w + ix as usize]);
                                }
                            }
                        }
                        assert_eq!(
                            got[(ci * oh + oy) * ow + ox],
                            m,
                            "{c}×{h}×{w} at {ci},{oy},{ox}"
                        );
                    }
                }
            }
        }
    }
}
