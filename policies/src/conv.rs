//! A faster CPU convolution for the ResNet backbone: NCHW, f32, bias (folded batch-norm) and an
//! optional fused ReLU, as one `gemm` call per image — `out[Cout, OH·OW] = W[Cout, C·k·k] ×
//! cols[C·k·k, OH·OW]`. The im2col matrix is laid out so that every row is a run of contiguous
//! input pixels and the product lands directly in NCHW (no transposes); 1×1 stride-1
//! convolutions skip im2col entirely. Other devices and dtypes use candle's own `conv2d`.

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
    /// `w` packed for the CPU kernel (`linear::pack_rows`; `Isa::detect` is fixed per process).
    pub w_packed: Option<Vec<f32>>,
}

impl ConvOp {
    fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let span = self.dil * (self.k - 1) + 1;
        (
            (h + 2 * self.pad - span) / self.stride + 1,
            (w + 2 * self.pad - span) / self.stride + 1,
        )
    }

    /// im2col of output rows `rows` into `cols` ([C·k·k, rows·OW]: row-major, or straight
    /// into the CPU kernel's panels).
    fn im2col(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        rows: std::ops::Range<usize>,
        cols: &mut impl Sink,
    ) {
        let (_, ow) = self.out_hw(h, w);
        let (k, s, p, d) = (self.k, self.stride, self.pad as isize, self.dil);
        for c in 0..self.cin {
            let plane = &x[c * h * w..(c + 1) * h * w];
            for ky in 0..k {
                for kx in 0..k {
                    let row = (c * k + ky) * k + kx;
                    for (r, oy) in rows.clone().enumerate() {
                        let iy = (oy * s + ky * d) as isize - p;
                        let at = r * ow;
                        if iy < 0 || iy >= h as isize {
                            cols.zero(row, at, ow);
                            continue;
                        }
                        let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                        let x0 = (kx * d) as isize - p;
                        if s == 1 {
                            // contiguous run with zero borders
                            let lo = (-x0).clamp(0, ow as isize) as usize;
                            let hi = ((w as isize - x0).clamp(0, ow as isize)) as usize;
                            cols.zero(row, at, lo);
                            if hi > lo {
                                let a = (lo as isize + x0) as usize;
                                cols.put(row, at + lo, &src[a..a + (hi - lo)]);
                            }
                            let end = hi.max(lo);
                            cols.zero(row, at + end, ow - end);
                        } else {
                            cols.each(row, at, ow, |ox| {
                                let ix = (ox * s) as isize + x0;
                                if ix >= 0 && ix < w as isize {
                                    src[ix as usize]
                                } else {
                                    0.0
                                }
                            });
                        }
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
    fn each(&mut self, row: usize, col: usize, len: usize, v: impl FnMut(usize) -> f32);
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
    fn each(&mut self, row: usize, col: usize, len: usize, mut v: impl FnMut(usize) -> f32) {
        for (j, d) in self.m[row * self.n + col..][..len].iter_mut().enumerate() {
            *d = v(j);
        }
    }
}

impl Sink for PanelWriter<'_> {
    fn put(&mut self, row: usize, col: usize, vals: &[f32]) {
        PanelWriter::put(self, row, col, vals)
    }
    fn zero(&mut self, row: usize, col: usize, len: usize) {
        PanelWriter::zero(self, row, col, len)
    }
    fn each(&mut self, row: usize, col: usize, len: usize, v: impl FnMut(usize) -> f32) {
        PanelWriter::each(self, row, col, len, v)
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
        let kk = self.cin * self.k * self.k;
        let direct = self.k == 1 && self.stride == 1 && self.pad == 0;
        // tile the output rows so the im2col block stays in cache (~256 K floats)
        let rows_per_tile = if direct {
            oh
        } else {
            (256 * 1024 / (kk * ow)).clamp(1, oh)
        };
        let mut out = vec![0f32; b * self.cout * n];
        let threads = candle_core::utils::get_num_threads();
        let isa = Isa::detect();
        let tiles: Vec<(usize, usize)> = (0..oh)
            .step_by(rows_per_tile)
            .map(|r0| (r0, (r0 + rows_per_tile).min(oh)))
            .collect();
        for bi in 0..b {
            let xi = &x[bi * c * h * w..(bi + 1) * c * h * w];
            let dst = &mut out[bi * self.cout * n..(bi + 1) * self.cout * n];
            for (co, row) in dst.chunks_mut(n).enumerate() {
                row.fill(self.b[co]);
            }
            let dst_ptr = SendPtr(dst.as_mut_ptr());
            let tile = |&(r0, r1): &(usize, usize), par: gemm::Parallelism| {
                let tn = (r1 - r0) * ow;
                if let Some(isa) = isa {
                    PANELS.with(|store| {
                        let mut store = store.borrow_mut();
                        // the im2col block (or the input itself, 1×1) as the right-hand side,
                        // written straight into this CPU's kernel panels
                        let b = Packed::filled(kk, tn, isa, &mut store, |cols| {
                            if direct {
                                for c in 0..kk {
                                    cols.put(c, 0, &xi[c * n..][..tn]);
                                }
                            } else {
                                self.im2col(xi, h, w, r0..r1, cols);
                            }
                        });
                        let parallel = matches!(par, gemm::Parallelism::Rayon(_));
                        // SAFETY: dst is [cout, n]; this tile writes only its columns
                        // r0·ow..r1·ow of each row, disjoint from every other tile.
                        unsafe {
                            b.accumulate(
                                &self.w,
                                self.cout,
                                self.w_packed.as_deref(),
                                SendPtr(dst_ptr.get().add(r0 * ow)),
                                n,
                                parallel,
                            )
                        };
                        *store = b.into_store();
                    });
                    return;
                }
                SCRATCH.with(|scratch| {
                    let mut cols = scratch.borrow_mut();
                    let rhs: &[f32] = if direct {
                        xi
                    } else {
                        if cols.len() < kk * tn {
                            cols.resize(kk * tn, 0.0);
                        }
                        let m = &mut cols[..kk * tn];
                        self.im2col(xi, h, w, r0..r1, &mut RowMajor { m, n: tn });
                        &cols[..kk * tn]
                    };
                    // SAFETY: dst is [cout, n]; this tile writes only columns r0·ow..r1·ow of
                    // each row, disjoint from every other tile; lhs is [cout, kk] and rhs
                    // [kk, tn], both row-major and in bounds.
                    unsafe {
                        gemm::gemm(
                            self.cout,
                            tn,
                            kk,
                            dst_ptr.get().add(r0 * ow),
                            1,
                            n as isize,
                            true,
                            self.w.as_ptr(),
                            1,
                            kk as isize,
                            rhs.as_ptr(),
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
            if self.relu {
                for v in dst.iter_mut() {
                    *v = v.max(0.0);
                }
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
        for (plane, o) in x.chunks(h * w).zip(out.chunks_mut(oh * ow)) {
            for oy in 0..oh {
                let ys = (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h);
                for ox in 0..ow {
                    let xs = (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w);
                    let mut m = f32::NEG_INFINITY;
                    for iy in ys.clone() {
                        for v in &plane[iy * w + xs.start..iy * w + xs.end] {
                            m = m.max(*v);
                        }
                    }
                    o[oy * ow + ox] = m;
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }
}

/// Run `op` on `x` (contiguous NCHW f32 on the CPU).
pub(crate) fn conv(x: &Tensor, op: &ConvOp) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(op)
}
