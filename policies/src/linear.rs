//! A CPU linear layer for f32: `y = x Wᵀ + b` with the weights packed once, at load time, into
//! column panels, and a register-blocked FMA kernel chosen at run time — AVX-512 (8 rows × 48
//! columns, 24 accumulators) or AVX2 + FMA (6 × 16, 12 accumulators), with a kernel per row count
//! for a last block of fewer rows (SmolVLA's 50 action tokens are 8 × 6 + 2). The rows of `x` are packed
//! per block of MR rows (broadcast from one pointer), the product is accumulated over blocks of
//! `KC` of the inner dimension with each panel's block in L1, and the panels are shared out among
//! the threads. The same kernel serves the attention (head by head), ACT's convolutions (the
//! im2col block as the right-hand side, the weights packed once) and, with a vectorised exp, the
//! softmax and GELU.
//! Without either instruction set, on other devices and in other dtypes it is candle's `Linear`.
//!
//! `REACHY_CPU_KERNEL=avx2` restricts the kernel to AVX2 on an AVX-512 machine (to measure the
//! AVX2 path there), `=off` leaves every product to candle.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};
use candle_nn::Linear;

/// Inner-dimension block: one panel's block (`KC × 48` floats, 48 KiB) stays in L1 / L2.
const KC: usize = 256;

/// The kernel's instruction set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// 8 × 48 with zmm registers.
    Avx512,
    /// 6 × 16 with ymm registers and FMA.
    Avx2,
}

impl Isa {
    /// What this CPU runs (and `REACHY_CPU_KERNEL` allows); `None`: candle's kernels. Read
    /// once per process: every packed operand and every kernel call agree on it.
    pub fn detect() -> Option<Self> {
        static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
        *ISA.get_or_init(Self::probe)
    }

    fn probe() -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            let allow = std::env::var("REACHY_CPU_KERNEL").unwrap_or_default();
            if allow == "off" {
                return None;
            }
            if allow != "avx2" && std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Self::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Self::Avx2);
            }
        }
        None
    }

    pub(crate) fn nr(self) -> usize {
        match self {
            Self::Avx512 => 48,
            Self::Avx2 => 16,
        }
    }

    fn mr(self) -> usize {
        match self {
            Self::Avx512 => 8,
            Self::Avx2 => 6,
        }
    }
}

/// 64-byte aligned storage for the packed panels.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// Storage of packed panels kept between products (a thread's convolution tiles).
#[derive(Default)]
pub(crate) struct PanelStore(Vec<Line>);

/// Writes a [k, n] right-hand side into [`Packed`]'s panel order, a run of a row at a time.
pub(crate) struct PanelWriter<'a> {
    flat: &'a mut [f32],
    k: usize,
    n: usize,
    nr: usize,
}

impl PanelWriter<'_> {
    /// Row `row`, columns `col..col + vals.len()` = `vals`.
    pub(crate) fn put(&mut self, row: usize, col: usize, vals: &[f32]) {
        self.run(row, col, vals.len(), |dst, i| {
            let src = &vals[i..][..dst.len()];
            // a whole panel row: fixed-size moves inline, not a call to memmove per 64 bytes
            match (dst.len(), dst) {
                (16, d) => copy_n::<16>(d, src),
                (48, d) => copy_n::<48>(d, src),
                (_, d) => d.copy_from_slice(src),
            }
        });
    }

    /// Row `row`, columns `col..col + len` = 0.
    pub(crate) fn zero(&mut self, row: usize, col: usize, len: usize) {
        self.run(row, col, len, |dst, _| match dst.len() {
            16 => zero_n::<16>(dst),
            48 => zero_n::<48>(dst),
            _ => dst.fill(0.0),
        });
    }

    /// The run split at panel boundaries: `f(destination, offset into the run)`.
    fn run(&mut self, row: usize, col: usize, len: usize, mut f: impl FnMut(&mut [f32], usize)) {
        assert!(
            row < self.k && col + len <= self.n,
            "outside the [k, n] being packed"
        );
        let (k, nr) = (self.k, self.nr);
        // one division for the run, then panel after panel
        let (mut p, mut jj) = (col / nr, col % nr);
        let mut done = 0;
        while done < len {
            let m = (nr - jj).min(len - done);
            let at = (p * k + row) * nr + jj;
            f(&mut self.flat[at..at + m], done);
            done += m;
            p += 1;
            jj = 0;
        }
    }
}

/// `dst = src`, both `N` long.
#[inline(always)]
fn copy_n<const N: usize>(dst: &mut [f32], src: &[f32]) {
    let d: &mut [f32; N] = dst.try_into().expect("N floats");
    *d = *<&[f32; N]>::try_from(src).expect("N floats");
}

/// `dst = 0`, `N` long.
#[inline(always)]
fn zero_n<const N: usize>(dst: &mut [f32]) {
    let d: &mut [f32; N] = dst.try_into().expect("N floats");
    *d = [0.0; N];
}

/// The weights of one layer, packed for [`Isa`]'s kernel: panel `p` holds columns `p·NR … p·NR+NR−1` of `Wᵀ` as
/// `K` rows of `NR` floats (zero beyond `N`).
pub struct Packed {
    lines: Vec<Line>,
    bias: Option<Vec<f32>>,
    k: usize,
    n: usize,
    isa: Isa,
}

/// Zeroed aligned storage for `floats` floats (a multiple of 16: NR is).
fn zeroed_lines(floats: usize) -> Vec<Line> {
    debug_assert_eq!(floats % 16, 0);
    vec![Line([0.0; 16]); floats / 16]
}

/// The lines as one slice of floats.
fn floats_mut(lines: &mut [Line]) -> &mut [f32] {
    // SAFETY: `Line` is `repr(C)` over `[f32; 16]` with no padding (64 bytes, align 64), so
    // `len` lines are `16·len` contiguous, initialised floats borrowed mutably here.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr() as *mut f32, lines.len() * 16) }
}

impl Packed {
    fn new(w: &[f32], bias: Option<Vec<f32>>, n: usize, k: usize, isa: Isa) -> Self {
        let nr = isa.nr();
        let panels = n.div_ceil(nr);
        let mut lines = zeroed_lines(panels * k * nr);
        let flat = floats_mut(&mut lines);
        for p in 0..panels {
            for j in 0..nr.min(n - p * nr) {
                let row = &w[(p * nr + j) * k..][..k];
                for (kk, v) in row.iter().enumerate() {
                    flat[(p * k + kk) * nr + j] = *v;
                }
            }
        }
        Self::from_lines(lines, bias, k, n, isa)
    }

    /// From `b` [k, n] row-major (row stride `ldb`) as the product's right-hand side — the
    /// convolution's im2col matrix — instead of weights [n, k].
    pub(crate) fn from_kn(b: &[f32], k: usize, n: usize, ldb: usize, isa: Isa) -> Self {
        let nr = isa.nr();
        let panels = n.div_ceil(nr);
        let mut lines = zeroed_lines(panels * k * nr);
        let flat = floats_mut(&mut lines);
        for p in 0..panels {
            let cols = nr.min(n - p * nr);
            for kk in 0..k {
                flat[(p * k + kk) * nr..][..cols].copy_from_slice(&b[kk * ldb + p * nr..][..cols]);
            }
        }
        Self::from_lines(lines, None, k, n, isa)
    }

    /// A right-hand side [k, n] written straight into panel order by `fill` (the
    /// convolution's im2col, without a row-major copy first), in `store`'s lines: reused from
    /// one call to the next, so no fresh pages each tile. `fill` must write every element
    /// of the k × n (the panels' padding columns are never read into the output).
    pub(crate) fn filled(
        k: usize,
        n: usize,
        isa: Isa,
        store: &mut PanelStore,
        fill: impl FnOnce(&mut PanelWriter),
    ) -> Self {
        let nr = isa.nr();
        let floats = n.div_ceil(nr) * k * nr;
        let mut lines = std::mem::take(&mut store.0);
        lines.resize(floats / 16, Line([0.0; 16]));
        lines.truncate(floats / 16);
        fill(&mut PanelWriter {
            flat: floats_mut(&mut lines),
            k,
            n,
            nr,
        });
        Self::from_lines(lines, None, k, n, isa)
    }

    /// Give the panels' storage back for the next [`Packed::filled`].
    pub(crate) fn into_store(self) -> PanelStore {
        PanelStore(self.lines)
    }

    fn from_lines(lines: Vec<Line>, bias: Option<Vec<f32>>, k: usize, n: usize, isa: Isa) -> Self {
        Self {
            lines,
            bias,
            k,
            n,
            isa,
        }
    }

    fn panel(&self, p: usize) -> *const f32 {
        let nr = self.isa.nr();
        // SAFETY: lines are `panels · k · nr` floats laid out contiguously (repr C, no padding
        // as 16 floats are 64 bytes); `p < panels` so the offset is in bounds.
        unsafe { (self.lines.as_ptr() as *const f32).add(p * self.k * nr) }
    }

    /// `out[m, n] = bias + x[m, k] · Wᵀ` (row-major, `out` filled here), the panels shared
    /// out among the threads.
    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.matmul_on(x, m, out, true)
    }

    fn matmul_on(&self, x: &[f32], m: usize, out: &mut [f32], parallel: bool) {
        let n = self.n;
        assert!(x.len() >= m * self.k && out.len() >= m * n);
        match &self.bias {
            Some(b) => out.chunks_mut(n).for_each(|r| r.copy_from_slice(b)),
            None => out.fill(0.0),
        }
        // SAFETY: out holds m rows of n floats
        unsafe { self.accumulate(x, m, None, SendPtr(out.as_mut_ptr()), n, parallel) }
    }

    /// `c[m, n] += x[m, k] · Wᵀ`, `c` row-major with row stride `ldc`; `prepacked`: x as
    /// [`pack_rows`] packed it (a convolution's constant weights), else x is packed here.
    ///
    /// # Safety
    /// `c` must hold `m` rows of `n` floats at stride `ldc`, touched by no one else meanwhile.
    pub(crate) unsafe fn accumulate(
        &self,
        x: &[f32],
        m: usize,
        prepacked: Option<&[f32]>,
        dst: SendPtr,
        ldc: usize,
        parallel: bool,
    ) {
        let (k, n, nr, mr) = (self.k, self.n, self.isa.nr(), self.isa.mr());
        assert!(x.len() >= m * k);
        let panels = n.div_ceil(nr);
        let blocks = m.div_ceil(mr);
        let threads = candle_core::utils::get_num_threads();
        let parallel = parallel && threads > 1 && m * n * k >= 1 << 16;
        let packed_here;
        let apack: &[f32] = match prepacked {
            Some(pre) => pre,
            None => {
                packed_here = pack_rows_on(x, m, k, self.isa, parallel);
                &packed_here
            }
        };
        // panels `ps` × row blocks `bs`, over every block of the inner dimension: a panel's
        // block (kc × NR) stays in L1 across the row blocks, the rows' block (m × kc) in L2
        // across the panels
        let run = |ps: std::ops::Range<usize>, bs: std::ops::Range<usize>| {
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                let ablk = &apack[k0 * blocks * mr..][..blocks * kc * mr];
                for p in ps.clone() {
                    let cols = nr.min(n - p * nr);
                    // SAFETY: panel p's block k0..k0+kc is in bounds of the packed lines
                    let b = unsafe { self.panel(p).add(k0 * nr) };
                    for ib in bs.clone() {
                        let rows = mr.min(m - ib * mr);
                        // SAFETY: block ib of ablk holds kc·MR floats; the kernel writes rows
                        // ib·MR..+rows, columns p·NR..+cols of out, which no other task
                        // touches; the ISA was detected at run time.
                        unsafe {
                            let a = ablk.as_ptr().add(ib * kc * mr);
                            let c = dst.get().add(ib * mr * ldc + p * nr);
                            #[cfg(target_arch = "x86_64")]
                            x86::kernel(self.isa, rows)(a, b, kc, c, ldc, rows, cols);
                            #[cfg(not(target_arch = "x86_64"))]
                            unreachable!("no SIMD kernel on this architecture: {a:?} {c:?}");
                        }
                    }
                }
            }
        };
        if !parallel {
            return run(0..panels, 0..blocks);
        }
        // one parallel region for the whole product: a few tasks a thread (work stealing
        // evens out a busy core), split over the panels, or over the rows when the panels
        // are too few
        use rayon::prelude::*;
        let tasks = 4 * threads;
        if panels >= tasks {
            let per = panels.div_ceil(tasks);
            (0..panels.div_ceil(per))
                .into_par_iter()
                .for_each(|t| run(t * per..((t + 1) * per).min(panels), 0..blocks));
        } else {
            let per = blocks.div_ceil(tasks.div_ceil(panels));
            let row_tasks = blocks.div_ceil(per);
            (0..panels * row_tasks).into_par_iter().for_each(|t| {
                let (p, r) = (t / row_tasks, t % row_tasks);
                run(p..p + 1, r * per..((r + 1) * per).min(blocks))
            });
        }
    }
}

/// x [m, k] packed once for every block of the inner dimension, as [`Packed::accumulate`]
/// reads it (`prepacked`): for operands that do not change, like a convolution's weights.
pub(crate) fn pack_rows(x: &[f32], m: usize, k: usize, isa: Isa) -> Vec<f32> {
    pack_rows_on(x, m, k, isa, false)
}

/// [`pack_rows`], the row blocks shared out among the threads when `parallel`.
fn pack_rows_on(x: &[f32], m: usize, k: usize, isa: Isa, parallel: bool) -> Vec<f32> {
    let mr = isa.mr();
    let blocks = m.div_ceil(mr);
    let mut out = vec![0f32; blocks * mr * k];
    let dst = SendPtr(out.as_mut_ptr());
    let pack = |ib: usize| {
        let rows = mr.min(m - ib * mr);
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            // SAFETY: block ib of k-block k0 is kc·MR floats at this offset of `out`
            // (blocks · MR · k floats), written by this task alone.
            let blk = unsafe {
                std::slice::from_raw_parts_mut(
                    dst.get().add(k0 * blocks * mr + ib * kc * mr),
                    kc * mr,
                )
            };
            for (r, row) in x[ib * mr * k..].chunks(k).take(rows).enumerate() {
                for (d, v) in blk.chunks_exact_mut(mr).zip(&row[k0..k0 + kc]) {
                    d[r] = *v;
                }
            }
        }
    };
    if parallel && blocks > 1 {
        use rayon::prelude::*;
        (0..blocks).into_par_iter().for_each(pack);
    } else {
        (0..blocks).for_each(pack);
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One kernel per instruction set: `c[rows, cols] += a[kc][MR] · b[kc][NR]`, the MR × NR
    /// accumulators in registers (rows unrolled by hand so none is spilled), `c` row-major
    /// with stride `ldc`.
    /// `$i`: the rows it computes (a block's first rows: the last block of a product whose
    /// rows are not a multiple of MR computes only its own), `$mr` the packed block's stride.
    macro_rules! kernel {
        ($name:ident, $feat:literal, $mr:literal, $nv:literal, $lanes:literal, $zero:ident,
         $load:ident, $loadu:ident, $storeu:ident, $set1:ident, $fma:ident, $add:ident;
         $($i:literal)*) => {
            /// # Safety
            /// `a` holds `kc·MR` floats, `b` `kc·NR` (aligned), `c` `rows` rows of `cols`
            /// floats at stride `ldc`; the CPU has the instruction set.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $name(
                a: *const f32,
                b: *const f32,
                kc: usize,
                c: *mut f32,
                ldc: usize,
                rows: usize,
                cols: usize,
            ) {
                let mut acc = [$zero(); $nv * $mr];
                let (mut ap, mut bp) = (a, b);
                for _ in 0..kc {
                    let mut bv = [$zero(); $nv];
                    for (v, x) in bv.iter_mut().enumerate() {
                        *x = $load(bp.add(v * $lanes));
                    }
                    $(
                        let av = $set1(*ap.add($i));
                        for v in 0..$nv {
                            acc[$nv * $i + v] = $fma(av, bv[v], acc[$nv * $i + v]);
                        }
                    )*
                    ap = ap.add($mr);
                    bp = bp.add($nv * $lanes);
                }
                for i in 0..rows {
                    let cp = c.add(i * ldc);
                    if cols == $nv * $lanes {
                        for v in 0..$nv {
                            let q = cp.add(v * $lanes);
                            $storeu(q, $add($loadu(q), acc[$nv * i + v]));
                        }
                    } else {
                        let mut t = [0f32; $nv * $lanes];
                        for v in 0..$nv {
                            $storeu(t.as_mut_ptr().add(v * $lanes), acc[$nv * i + v]);
                        }
                        for (j, v) in t.iter().take(cols).enumerate() {
                            *cp.add(j) += v;
                        }
                    }
                }
            }
        };
    }

    /// One instruction set's kernels: one per row count, `name: rows…`.
    macro_rules! kernels {
        ($feat:literal, $mr:literal, $nv:literal, $lanes:literal, $ops:tt;
         $($name:ident: $($i:literal)*),+) => {
            $(kernels!(@one $name, $feat, $mr, $nv, $lanes, $ops; $($i)*);)+
        };
        (@one $name:ident, $feat:literal, $mr:literal, $nv:literal, $lanes:literal,
         [$($op:ident),+]; $($i:literal)*) => {
            kernel!($name, $feat, $mr, $nv, $lanes, $($op),+; $($i)*);
        };
    }
    kernels!("avx512f", 8, 3, 16, [_mm512_setzero_ps, _mm512_load_ps, _mm512_loadu_ps,
        _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps];
        avx512_8: 0 1 2 3 4 5 6 7, avx512_7: 0 1 2 3 4 5 6, avx512_6: 0 1 2 3 4 5,
        avx512_5: 0 1 2 3 4, avx512_4: 0 1 2 3, avx512_3: 0 1 2, avx512_2: 0 1, avx512_1: 0);
    kernels!("avx2,fma", 6, 2, 8, [_mm256_setzero_ps, _mm256_load_ps, _mm256_loadu_ps,
        _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps];
        avx2_6: 0 1 2 3 4 5, avx2_5: 0 1 2 3 4, avx2_4: 0 1 2 3, avx2_3: 0 1 2, avx2_2: 0 1,
        avx2_1: 0);

    /// The signature every kernel shares.
    pub(super) type Kernel =
        unsafe fn(*const f32, *const f32, usize, *mut f32, usize, usize, usize);

    /// The kernel of `isa` for a block of `rows` (1 … MR) rows.
    pub(super) fn kernel(isa: super::Isa, rows: usize) -> Kernel {
        use super::Isa;
        match (isa, rows) {
            (Isa::Avx512, 7) => avx512_7,
            (Isa::Avx512, 6) => avx512_6,
            (Isa::Avx512, 5) => avx512_5,
            (Isa::Avx512, 4) => avx512_4,
            (Isa::Avx512, 3) => avx512_3,
            (Isa::Avx512, 2) => avx512_2,
            (Isa::Avx512, 1) => avx512_1,
            (Isa::Avx512, _) => avx512_8,
            (Isa::Avx2, 5) => avx2_5,
            (Isa::Avx2, 4) => avx2_4,
            (Isa::Avx2, 3) => avx2_3,
            (Isa::Avx2, 2) => avx2_2,
            (Isa::Avx2, 1) => avx2_1,
            (Isa::Avx2, _) => avx2_6,
        }
    }
}

/// GELU with the tanh approximation (`gelu_pytorch_tanh`) for f32 on the CPU, on the threads:
/// `u·σ(2z)` (= `½u(1 + tanh z)`) with a vectorised exp; candle's own op where no SIMD kernel
/// applies.
pub fn gelu_tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    let isa = match Isa::detect() {
        Some(isa) if x.device().is_cpu() && x.dtype() == DType::F32 => isa,
        _ => return x.gelu(),
    };
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    let f = |c: &mut [f32]| vector::gelu(isa, c);
    if candle_core::utils::get_num_threads() > 1 && v.len() >= 1 << 14 {
        use rayon::prelude::*;
        v.par_chunks_mut(1 << 13).for_each(f);
    } else {
        f(&mut v);
    }
    Tensor::from_vec(v, x.shape(), x.device())
}

/// [`attention`] on tensors: `q` [B, H, Lq, D], `k`/`v` [B, KVH, Lk, D], `mask` broadcastable
/// to [Lq, Lk]; [B, Lq, H·D], or `None` off the CPU, in other dtypes or without a SIMD kernel
/// (the caller computes it with candle's ops then).
pub fn attention_tensors(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    scale: f32,
) -> candle_core::Result<Option<Tensor>> {
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if Isa::detect().is_none() || !(f32_cpu(q) && f32_cpu(k) && f32_cpu(v)) {
        return Ok(None);
    }
    let (b, h, lq, d) = q.dims4()?;
    let (kvh, lk) = (k.dim(1)?, k.dim(2)?);
    let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
    let m = mask
        .map(|m| flat(&m.to_dtype(DType::F32)?.broadcast_as((lq, lk))?))
        .transpose()?;
    let out = attention(
        &flat(q)?,
        &flat(k)?,
        &flat(v)?,
        m.as_deref(),
        (b, h, kvh),
        (lq, lk, d),
        scale,
    );
    out.map(|o| Tensor::from_vec(o, (b, lq, h * d), q.device()))
        .transpose()
}

/// Scaled dot-product attention on the CPU in f32, head by head on the threads, each head's
/// scores kept in cache: `q` [B, H, Lq, D], `k`/`v` [B, KVH, Lk, D] (query head h reads KV head
/// h / (H / KVH)), `softmax(q kᵀ · scale + mask) v` with `mask` [Lq, Lk] additive; returns
/// [B, Lq, H·D] (heads merged). `None` where the kernel does not apply (no SIMD kernel).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
    (b, h, kvh): (usize, usize, usize),
    (lq, lk, d): (usize, usize, usize),
    scale: f32,
) -> Option<Vec<f32>> {
    let isa = Isa::detect()?;
    let g = h / kvh;
    let mut out = vec![0f32; b * lq * h * d];
    let dst = SendPtr(out.as_mut_ptr());
    let head = |job: usize| {
        let (bi, hi) = (job / h, job % h);
        let kv = bi * kvh + hi / g;
        let qh = &q[(bi * h + hi) * lq * d..][..lq * d];
        let kh = &k[kv * lk * d..][..lk * d];
        let vh = &v[kv * lk * d..][..lk * d];
        // scores [Lq, Lk] = qh · khᵀ: kh is already "weights" [Lk, D]
        let mut s = vec![0f32; lq * lk];
        Packed::new(kh, None, lk, d, isa).matmul_on(qh, lq, &mut s, false);
        vector::softmax(isa, &mut s, lk, scale, mask);
        // out_h [Lq, D] = p · vh: vh [Lk, D] is already the right-hand side
        let mut oh = vec![0f32; lq * d];
        Packed::from_kn(vh, lk, d, d, isa).matmul_on(&s, lq, &mut oh, false);
        for (i, row) in oh.chunks(d).enumerate() {
            // SAFETY: head hi of batch bi owns columns hi·d..hi·d+d of rows bi·lq..bi·lq+lq
            // of out; no other job writes them.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    row.as_ptr(),
                    dst.get().add((bi * lq + i) * h * d + hi * d),
                    d,
                );
            }
        }
    };
    if candle_core::utils::get_num_threads() > 1 && b * h > 1 {
        use rayon::prelude::*;
        (0..b * h).into_par_iter().for_each(head);
    } else {
        (0..b * h).for_each(head);
    }
    Some(out)
}

/// Elementwise kernels written once and compiled per instruction set (LLVM vectorises the
/// branch-free bodies inside `target_feature` functions).
mod vector {
    use super::Isa;

    /// e^x for f32, Cephes' polynomial after Cody–Waite reduction (≈ 1 ulp on the clamped
    /// range [−87.3, 88.3], which keeps 2ⁿ normal), branch-free.
    #[inline(always)]
    fn exp(x: f32) -> f32 {
        let x = x.clamp(-87.3, 88.3);
        // round to nearest through the 1.5·2²³ shift
        let t = x * std::f32::consts::LOG2_E + 12_582_912.0;
        let n = t - 12_582_912.0;
        // n as an integer from t's low mantissa bits (no float → int cast: it vectorises)
        let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
        let r = n.mul_add(-0.693_359_4, x);
        let r = n.mul_add(2.121_944_4e-4, r);
        let mut p = 1.987_569_1e-4f32;
        p = p.mul_add(r, 1.398_2e-3);
        p = p.mul_add(r, 8.333_452e-3);
        p = p.mul_add(r, 4.166_579_6e-2);
        p = p.mul_add(r, 1.666_666_5e-1);
        p = p.mul_add(r, 0.5);
        let e = (p * r).mul_add(r, r) + 1.0;
        e * f32::from_bits((ni.wrapping_add(127) << 23) as u32)
    }

    #[inline(always)]
    fn softmax_body(s: &mut [f32], lk: usize, scale: f32, mask: Option<&[f32]>) {
        const L: usize = 16;
        for (i, row) in s.chunks_mut(lk).enumerate() {
            match mask {
                Some(m) => row
                    .iter_mut()
                    .zip(&m[i * lk..][..lk])
                    .for_each(|(x, m)| *x = *x * scale + m),
                None => row.iter_mut().for_each(|x| *x *= scale),
            }
            let mut lanes = [f32::NEG_INFINITY; L];
            let mut chunks = row.chunks_exact(L);
            for c in &mut chunks {
                for j in 0..L {
                    lanes[j] = if c[j] > lanes[j] { c[j] } else { lanes[j] };
                }
            }
            let max = chunks
                .remainder()
                .iter()
                .chain(&lanes)
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            // fixed-width groups: LLVM vectorises these (not the open loop)
            let mut groups = row.chunks_exact_mut(L);
            for c in &mut groups {
                for x in c.iter_mut() {
                    *x = exp(*x - max);
                }
            }
            groups
                .into_remainder()
                .iter_mut()
                .for_each(|x| *x = exp(*x - max));
            let mut lanes = [0f32; L];
            let mut chunks = row.chunks_exact(L);
            for c in &mut chunks {
                for j in 0..L {
                    lanes[j] += c[j];
                }
            }
            let sum: f32 = lanes.iter().chain(chunks.remainder()).sum();
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }

    #[inline(always)]
    fn gelu_body(v: &mut [f32]) {
        const A: f32 = 0.797_884_6; // √(2/π)
        let f = |x: &mut f32| {
            let u = *x;
            let z = A * u * (1.0 + 0.044715 * u * u);
            *x = u / (1.0 + exp(-2.0 * z));
        };
        let mut groups = v.chunks_exact_mut(16);
        for c in &mut groups {
            c.iter_mut().for_each(f);
        }
        groups.into_remainder().iter_mut().for_each(f);
    }

    macro_rules! per_isa {
        ($name:ident, $body:ident, ($($arg:ident: $t:ty),*)) => {
            pub(super) fn $name(isa: Isa, $($arg: $t),*) {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f")]
                    fn avx512($($arg: $t),*) {
                        $body($($arg),*)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    fn avx2($($arg: $t),*) {
                        $body($($arg),*)
                    }
                    // SAFETY: `isa` was detected on this CPU (`Isa::detect`)
                    unsafe {
                        match isa {
                            Isa::Avx512 => avx512($($arg),*),
                            Isa::Avx2 => avx2($($arg),*),
                        }
                    }
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = isa;
                    $body($($arg),*)
                }
            }
        };
    }

    // each row of `s` [rows, lk]: `softmax(s · scale + mask)` in place (the mask [rows, lk])
    per_isa!(softmax, softmax_body, (s: &mut [f32], lk: usize, scale: f32, mask: Option<&[f32]>));
    per_isa!(gelu, gelu_body, (v: &mut [f32]));

    #[cfg(test)]
    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        for i in -8730..=8820 {
            let x = i as f32 * 0.01 + 0.003;
            let (a, b) = (exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
        }
        assert!(worst < 2.5e-7, "{worst}");
    }
}

/// A raw output pointer shared by threads that write disjoint parts of one buffer (the panels
/// of `Packed::matmul`, the heads of `attention`, the tiles of the convolution).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only used by jobs writing disjoint parts of one buffer (see its users).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

impl CustomOp1 for Packed {
    fn name(&self) -> &'static str {
        "reachy-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("reachy-linear: f32 only")
        };
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("reachy-linear: input must be contiguous")
        };
        let dims = layout.shape().dims();
        if dims.last() != Some(&self.k) {
            candle_core::bail!("reachy-linear: input {dims:?}, expected [.., {}]", self.k)
        }
        let m = (o2 - o1) / self.k;
        let mut out = vec![0f32; m * self.n];
        self.matmul(&data[o1..o2], m, &mut out);
        let mut shape = dims.to_vec();
        *shape.last_mut().expect("at least one dim") = self.n;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// `y = x Wᵀ + b`: the packed CPU kernel where it applies, candle's `Linear` elsewhere.
#[derive(Clone)]
pub enum FastLinear {
    /// f32 weights on the CPU, packed for this CPU's kernel (the originals are dropped).
    Packed(Arc<Packed>),
    /// Any other device or dtype.
    Candle(Linear),
}

impl FastLinear {
    /// Pack `w` [out, in] (and `b` [out]) for the CPU kernel when they are f32 on the CPU and
    /// this CPU has one.
    pub fn new(w: Tensor, b: Option<Tensor>) -> candle_core::Result<Self> {
        match Isa::detect() {
            Some(isa) if w.device().is_cpu() && w.dtype() == DType::F32 => {
                let (n, k) = w.dims2()?;
                let flat = w.flatten_all()?.to_vec1::<f32>()?;
                let bias = b.as_ref().map(|b| b.to_vec1::<f32>()).transpose()?;
                Ok(Self::Packed(Arc::new(Packed::new(&flat, bias, n, k, isa))))
            }
            _ => Ok(Self::Candle(Linear::new(w, b))),
        }
    }
}

impl Module for FastLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Packed(p) => x.contiguous()?.apply_op1_no_bwd(p.as_ref()),
            Self::Candle(l) => l.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// `x` is [2, m, k]: 2·m rows.
    fn check(isa: Isa, m: usize, k: usize, n: usize, bias: bool) {
        check_rows(isa, (2, m), k, n, bias)
    }

    fn check_rows(isa: Isa, (batch, m): (usize, usize), k: usize, n: usize, bias: bool) {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (batch, m, k), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (n, k), &dev).unwrap();
        let b = bias.then(|| Tensor::randn(0f32, 1., n, &dev).unwrap());
        let want = Linear::new(w.clone(), b.clone()).forward(&x).unwrap();
        let flat = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bias = b.map(|b| b.to_vec1::<f32>().unwrap());
        let p = Packed::new(&flat, bias, n, k, isa);
        let got = x.apply_op1_no_bwd(&p).unwrap();
        assert_eq!(got.dims(), want.dims());
        let (got, want) = (
            got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        let d = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        // sums of k products of unit normals: rounding grows with √k
        assert!(
            d <= 1e-5 * (k as f32).sqrt() * 4.0,
            "{isa:?} {batch}·{m}×{k}×{n}: {d}"
        );
    }

    #[test]
    fn packed_kernels_equal_candles_linear_on_every_edge() {
        let mut isas = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                isas.push(Isa::Avx2);
            }
        }
        for isa in isas {
            // rows below, at and above MR; columns off the panel width; k across KC blocks
            for (m, k, n) in [
                (1, 1, 1),
                (5, 7, 13),
                (12, 256, 32),
                (13, 257, 33),
                (50, 720, 320),
                (7, 600, 47),
                (64, 96, 96),
            ] {
                check(isa, m, k, n, true);
                check(isa, m, k, n, false);
            }
            // every row count of a last block: each has a kernel of its own
            for m in 1..=17 {
                check_rows(isa, (1, m), 300, 40, true);
            }
        }
    }
}
