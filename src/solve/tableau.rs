//! Method coefficients as data, each set with its tableau and its source.
//!
//! The steppers in this module's siblings read these tables; gradient code that replays a
//! schedule step by step (backprop through the solver) can read the same ones.

/// An explicit Runge–Kutta method: `c`, the strictly lower-triangular `a` (row `i` has `i`
/// entries) and the weights `b`.
#[derive(Debug)]
pub struct ExplicitRk {
    /// Stage times as fractions of the step.
    pub c: &'static [f64],
    /// Stage coefficients; row `i` has `i` entries.
    pub a: &'static [&'static [f64]],
    /// Solution weights.
    pub b: &'static [f64],
}

/// Forward Euler.
/// ```text
/// 0 |
/// --+--
///   | 1
/// ```
pub const EULER: ExplicitRk = ExplicitRk {
    c: &[0.0],
    a: &[&[]],
    b: &[1.0],
};

/// Explicit midpoint rule (Runge 1895; Hairer–Nørsett–Wanner I, §II.1).
/// ```text
///   0 |
/// 1/2 | 1/2
/// ----+---------
///     | 0    1
/// ```
pub const MIDPOINT: ExplicitRk = ExplicitRk {
    c: &[0.0, 0.5],
    a: &[&[], &[0.5]],
    b: &[0.0, 1.0],
};

/// Heun's method, the explicit trapezoidal rule (Heun 1900; Hairer–Nørsett–Wanner I, §II.1).
/// ```text
/// 0 |
/// 1 | 1
/// --+---------
///   | 1/2  1/2
/// ```
pub const HEUN: ExplicitRk = ExplicitRk {
    c: &[0.0, 1.0],
    a: &[&[], &[1.0]],
    b: &[0.5, 0.5],
};

/// The classic fourth-order method (Kutta 1901; Hairer–Nørsett–Wanner I, §II.1).
/// ```text
///   0 |
/// 1/2 | 1/2
/// 1/2 | 0    1/2
///   1 | 0    0    1
/// ----+-------------------
///     | 1/6  1/3  1/3  1/6
/// ```
pub const RK4: ExplicitRk = ExplicitRk {
    c: &[0.0, 0.5, 0.5, 1.0],
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
};

/// How an embedded pair interpolates inside an accepted step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dense {
    /// Cubic Hermite through `y0, f0, y1, f1` (both slopes are stages of an FSAL pair).
    Hermite,
    /// Shampine's 4th-order continuous extension of DOPRI5 ([`DOPRI5_DENSE`]).
    Dopri5,
    /// Tsitouras' 4th-order interpolant ([`TSIT5_INTERP`]).
    Tsit5,
}

/// An embedded explicit pair with the FSAL property: the last stage is `f(t + h, y_new)`, so
/// its row of `a` holds the solution weights `b`, and it becomes the next step's first stage.
#[derive(Debug)]
pub struct EmbeddedRk {
    /// Stage times as fractions of the step; the last is 1.
    pub c: &'static [f64],
    /// Stage coefficients; row `i` has `i` entries; the last row is `b`.
    pub a: &'static [&'static [f64]],
    /// Error weights `b - b̂` (sign irrelevant): the error estimate is `h Σ e_j k_j`.
    pub e: &'static [f64],
    /// Order of the embedded (lower-order) solution; the error estimate is `O(h^(q+1))`.
    pub q: u32,
    /// The dense output.
    pub dense: Dense,
}

/// Bogacki–Shampine 3(2), FSAL (P. Bogacki, L. F. Shampine, "A 3(2) pair of Runge–Kutta
/// formulas", Appl. Math. Lett. 2 (1989) 321–325; `b̂` and `e` as in OrdinaryDiffEq's `BS3`).
/// ```text
///   0 |
/// 1/2 | 1/2
/// 3/4 | 0     3/4
///   1 | 2/9   1/3   4/9
/// ----+-----------------------
///   b | 2/9   1/3   4/9   0
///   b̂ | 7/24  1/4   1/3   1/8
/// ```
pub const BOSH3: EmbeddedRk = EmbeddedRk {
    c: &[0.0, 0.5, 0.75, 1.0],
    a: &[
        &[],
        &[0.5],
        &[0.0, 0.75],
        &[2.0 / 9.0, 1.0 / 3.0, 4.0 / 9.0],
    ],
    e: &[5.0 / 72.0, -1.0 / 12.0, -1.0 / 9.0, 1.0 / 8.0],
    q: 2,
    dense: Dense::Hermite,
};

/// Dormand–Prince 5(4), FSAL (J. R. Dormand, P. J. Prince, "A family of embedded Runge–Kutta
/// formulae", J. Comput. Appl. Math. 6 (1980) 19–26), with the coefficients and error weights
/// `E` of Hairer's `dopri5.f` (subroutine `CDOPRI`).
/// ```text
///    0 |
///  1/5 | 1/5
/// 3/10 | 3/40        9/40
///  4/5 | 44/45      -56/15      32/9
///  8/9 | 19372/6561 -25360/2187 64448/6561 -212/729
///    1 | 9017/3168  -355/33     46732/5247  49/176  -5103/18656
///    1 | 35/384      0          500/1113    125/192 -2187/6784    11/84
/// -----+--------------------------------------------------------------------
///    E | 71/57600    0         -71/16695    71/1920 -17253/339200 22/525  -1/40
/// ```
pub const DOPRI5: EmbeddedRk = EmbeddedRk {
    c: &[0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0],
    a: &[
        &[],
        &[0.2],
        &[3.0 / 40.0, 9.0 / 40.0],
        &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
        &[
            19372.0 / 6561.0,
            -25360.0 / 2187.0,
            64448.0 / 6561.0,
            -212.0 / 729.0,
        ],
        &[
            9017.0 / 3168.0,
            -355.0 / 33.0,
            46732.0 / 5247.0,
            49.0 / 176.0,
            -5103.0 / 18656.0,
        ],
        &[
            35.0 / 384.0,
            0.0,
            500.0 / 1113.0,
            125.0 / 192.0,
            -2187.0 / 6784.0,
            11.0 / 84.0,
        ],
    ],
    e: &[
        71.0 / 57600.0,
        0.0,
        -71.0 / 16695.0,
        71.0 / 1920.0,
        -17253.0 / 339200.0,
        22.0 / 525.0,
        -1.0 / 40.0,
    ],
    q: 4,
    dense: Dense::Dopri5,
};

/// Shampine's dense output for DOPRI5 (L. F. Shampine, "Some practical Runge–Kutta formulas",
/// Math. Comp. 46 (1986) 135–150), the `D1..D7` of Hairer's `dopri5.f`: the fifth coefficient
/// of the continuous extension is `h Σ d_j k_j`.
pub const DOPRI5_DENSE: [f64; 7] = [
    -12715105075.0 / 11282082432.0,
    0.0,
    87487479700.0 / 32700410799.0,
    -10690763975.0 / 1880347072.0,
    701980252875.0 / 199316789632.0,
    -1453857185.0 / 822651844.0,
    69997945.0 / 29380423.0,
];

/// Tsitouras 5(4), FSAL (Ch. Tsitouras, "Runge–Kutta pairs of order 5(4) satisfying only the
/// first column simplifying assumption", Comput. Math. Appl. 62 (2011) 770–775), coefficients
/// as rounded to f64 in OrdinaryDiffEq's `tsit_tableaus.jl`.
/// ```text
/// 0              |
/// 0.161          | 0.161
/// 0.327          | -0.00848..  0.33548..
/// 0.9            | 2.89715..  -6.35944..   4.36229..
/// 0.98002554..   | 5.32586..  -11.7488..   7.49553..  -0.09249..
/// 1              | 5.86145..  -12.9209..   8.15936..  -0.07158..  -0.02826..
/// 1              | 0.09646..   0.01        0.47988..   1.37900..  -3.29006..  2.32471..
/// ---------------+----------------------------------------------------------------------
/// b - b̂          | -0.00178.. -0.00081..   0.00788..  -0.14471..   0.58235.. -0.45808.. 1/66
/// ```
pub const TSIT5: EmbeddedRk = EmbeddedRk {
    c: &[0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0],
    a: &[
        &[],
        &[0.161],
        &[-0.008480655492356989, 0.335480655492357],
        &[2.8971530571054935, -6.359448489975075, 4.3622954328695815],
        &[
            5.325864828439257,
            -11.748883564062828,
            7.4955393428898365,
            -0.09249506636175525,
        ],
        &[
            5.86145544294642,
            -12.92096931784711,
            8.159367898576159,
            -0.071584973281401,
            -0.028269050394068383,
        ],
        &[
            0.09646076681806523,
            0.01,
            0.4798896504144996,
            1.379008574103742,
            -3.290069515436081,
            2.324710524099774,
        ],
    ],
    e: &[
        -0.0017800110522257772,
        -0.0008164344596567469,
        0.007880878010261995,
        -0.1447110071732629,
        0.5823571654525552,
        -0.45808210592918697,
        1.0 / 66.0,
    ],
    q: 4,
    dense: Dense::Tsit5,
};

/// Tsitouras' interpolant (same paper; expanded form of OrdinaryDiffEq's `Tsit5Interp`):
/// `y(t + θh) = y + h Σ_j b_j(θ) k_j` with `b_j(θ) = Σ_m r[j][m] θ^(m+1)`.
pub const TSIT5_INTERP: [[f64; 4]; 7] = [
    [
        1.0,
        -2.763706197274826,
        2.9132554618219126,
        -1.0530884977290216,
    ],
    [0.0, 0.13169999999999998, -0.2234, 0.1017],
    [
        0.0,
        3.9302962368947516,
        -5.941033872131505,
        2.490627285651253,
    ],
    [
        0.0,
        -12.411077166933676,
        30.33818863028232,
        -16.548102889244902,
    ],
    [0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
    [
        0.0,
        -27.896526289197286,
        65.09189467479366,
        -34.87065786149661,
    ],
    [0.0, 1.5, -4.0, 2.5],
];

/// RODAS4 (E. Hairer, G. Wanner, *Solving Ordinary Differential Equations II*, 2nd ed.,
/// Springer 1996, §IV.7 and §VI.3), coefficients of Hairer's `rodas.f` (`ROCOE`, METH = 1),
/// in the form that avoids matrix-vector products: with `W = I/(hγ) − J`, stage `i` solves
///
/// ```text
/// W U_i = f(t + c_i h, y + Σ_{j<i} a_ij U_j) + Σ_{j<i} (C_ij / h) U_j + h d_i ∂f/∂t
/// ```
///
/// Stage 5 is evaluated at `y5 = y + Σ a_5j U_j`; `ŷ = y5 + U5` is the embedded 3rd-order
/// solution, stage 6 is evaluated at `ŷ`, `y_new = ŷ + U6`, and `U6` is the error estimate.
/// The dense output (`H` rows, Hairer's `D21..D35`, as in OrdinaryDiffEq's `Rodas4Tableau`) is
/// `y(θ) = (1−θ) y + θ (y_new + (1−θ)(Σ h2_j U_j + θ Σ h3_j U_j))`.
#[derive(Debug)]
pub struct Rosenbrock {
    /// Diagonal `γ`.
    pub gamma: f64,
    /// Stage times (stages 1..4; stages 5 and 6 are at `c = 1`).
    pub c: [f64; 4],
    /// `a_ij` for stages 2..5 (row `i - 1` has `i - 1` entries used).
    pub a: [[f64; 4]; 4],
    /// `C_ij` for stages 2..6.
    pub cc: [[f64; 5]; 5],
    /// `d_i`: coefficients of `h ∂f/∂t` for stages 1..4.
    pub d: [f64; 4],
    /// Dense-output rows applied to `U_1..U_5`.
    pub h: [[f64; 5]; 2],
}

/// The RODAS4 coefficients (see [`Rosenbrock`]).
pub const RODAS4: Rosenbrock = Rosenbrock {
    gamma: 0.25,
    c: [0.0, 0.386, 0.21, 0.63],
    a: [
        [1.544, 0.0, 0.0, 0.0],
        [0.9466785280815826, 0.2557011698983284, 0.0, 0.0],
        [
            3.314825187068521,
            2.896124015972201,
            0.9986419139977817,
            0.0,
        ],
        [
            1.221224509226641,
            6.019134481288629,
            12.53708332932087,
            -0.687886036105895,
        ],
    ],
    cc: [
        [-5.6688, 0.0, 0.0, 0.0, 0.0],
        [-2.430093356833875, -0.2063599157091915, 0.0, 0.0, 0.0],
        [
            -0.1073529058151375,
            -9.594562251023355,
            -20.47028614809616,
            0.0,
            0.0,
        ],
        [
            7.496443313967647,
            -10.24680431464352,
            -33.99990352819905,
            11.7089089320616,
            0.0,
        ],
        [
            8.083246795921522,
            -7.981132988064893,
            -31.52159432874371,
            16.31930543123136,
            -6.058818238834054,
        ],
    ],
    d: [0.25, -0.1043, 0.1035, -0.0362],
    h: [
        [
            10.12623508344586,
            -7.487995877610167,
            -34.80091861555747,
            -7.992771707568823,
            1.025137723295662,
        ],
        [
            -0.6762803392801253,
            6.087714651680015,
            16.43084320892478,
            24.76722511418386,
            -6.594389125716872,
        ],
    ],
};

/// Highest BDF order.
pub const BDF_MAX_ORDER: usize = 5;

/// NDF modifiers `κ_k` of Klopfenstein–Shampine (L. F. Shampine, M. W. Reichelt, "The MATLAB
/// ODE suite", SIAM J. Sci. Comput. 18 (1997) 1–22, Table 1; used by SciPy's `BDF` and
/// diffsol's `Bdf`), index = order. With all `κ = 0` the formulas are the plain BDFs.
pub const NDF_KAPPA: [f64; BDF_MAX_ORDER + 1] = [0.0, -0.1850, -1.0 / 9.0, -0.0823, -0.0415, 0.0];
