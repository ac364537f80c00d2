//! IR node types: scalar expression nodes referring to earlier nodes by [`ExprId`].

use std::fmt;

use num_traits::Float;

/// Index of a node in a [`super::Pool`]; children always have smaller ids than their parents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExprId(pub u32);

impl ExprId {
    /// Stands for a scalar root that is not expanded yet (a cost's value before
    /// [`super::expand_scalar`]); it indexes no node, so reading it fails loudly.
    pub const DEFERRED: ExprId = ExprId(u32::MAX);

    /// The id as an index into the pool's node vector.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ExprId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// A leaf that takes its value from outside the expression: time, one element of a state,
/// parameter, input or observation, or one element of a derivative direction.
///
/// Elements are row-major flat indices into the declared shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Var {
    /// The time variable `t`.
    Time,
    /// Element `elem` of state number `state` (declaration order).
    State {
        /// State index.
        state: u32,
        /// Row-major element.
        elem: u32,
    },
    /// Element `elem` of parameter number `param`; for `per layer` and `on knots` parameters
    /// the element of the copy in force at the current time (resolved at run time).
    Param {
        /// Parameter index.
        param: u32,
        /// Row-major element.
        elem: u32,
    },
    /// Element `elem` of input number `input`.
    Input {
        /// Input index.
        input: u32,
        /// Row-major element.
        elem: u32,
    },
    /// Label number `label` (a scalar per sample).
    Label {
        /// Label index.
        label: u32,
    },
    /// Element `elem` of observed quantity number `observed` at the current observation time.
    Observed {
        /// Observed index.
        observed: u32,
        /// Row-major element.
        elem: u32,
    },
    /// Element of the tangent direction `v` over the states in a Jacobian-vector product.
    StateTangent {
        /// State index.
        state: u32,
        /// Row-major element.
        elem: u32,
    },
    /// Element of the tangent direction over the parameters in a Jacobian-vector product.
    ParamTangent {
        /// Parameter index.
        param: u32,
        /// Row-major element.
        elem: u32,
    },
    /// Element of the cotangent `w` over the state equations in a vector-Jacobian product.
    Cotangent {
        /// State index.
        state: u32,
        /// Row-major element.
        elem: u32,
    },
    /// The cotangent of the running costs' quadrature `q' = L` (one per sample) in the
    /// vector-Jacobian product of the field augmented by it
    /// ([`super::Derivatives::quad_vjp_state`]); its lane follows the states' cotangents.
    RunningCotangent,
}

/// Elementwise scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Func {
    /// sin
    Sin,
    /// cos
    Cos,
    /// tan
    Tan,
    /// exp
    Exp,
    /// natural logarithm
    Log,
    /// square root
    Sqrt,
    /// absolute value
    Abs,
    /// hyperbolic tangent
    Tanh,
    /// 1 / (1 + exp(-x))
    Sigmoid,
    /// max(x, 0)
    Relu,
    /// log(1 + exp(x)), computed without overflow
    Softplus,
    /// -1, 0 or 1 (no derivative)
    Sign,
}

impl Func {
    /// The function's name as written in the language and printed in the IR.
    pub fn name(self) -> &'static str {
        match self {
            Func::Sin => "sin",
            Func::Cos => "cos",
            Func::Tan => "tan",
            Func::Exp => "exp",
            Func::Log => "log",
            Func::Sqrt => "sqrt",
            Func::Abs => "abs",
            Func::Tanh => "tanh",
            Func::Sigmoid => "sigmoid",
            Func::Relu => "relu",
            Func::Softplus => "softplus",
            Func::Sign => "sign",
        }
    }

    /// All functions, for name look-up.
    pub const ALL: [Func; 12] = [
        Func::Sin,
        Func::Cos,
        Func::Tan,
        Func::Exp,
        Func::Log,
        Func::Sqrt,
        Func::Abs,
        Func::Tanh,
        Func::Sigmoid,
        Func::Relu,
        Func::Softplus,
        Func::Sign,
    ];

    /// Evaluates the function; the one definition shared by constant folding, the interpreter
    /// and compiled kernels in either precision (`f64` through `num_traits`, which calls the
    /// standard library's `f64` functions).
    pub fn apply<R: Float>(self, x: R) -> R {
        let (zero, one) = (R::zero(), R::one());
        match self {
            Func::Sin => x.sin(),
            Func::Cos => x.cos(),
            Func::Tan => x.tan(),
            Func::Exp => x.exp(),
            Func::Log => x.ln(),
            Func::Sqrt => x.sqrt(),
            Func::Abs => x.abs(),
            Func::Tanh => x.tanh(),
            Func::Sigmoid => {
                // Both branches avoid exp overflow for large |x|.
                if x >= zero {
                    one / (one + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (one + e)
                }
            }
            Func::Relu => {
                if x > zero {
                    x
                } else {
                    zero
                }
            }
            Func::Softplus => {
                // log(1 + e^x) = max(x, 0) + log1p(e^-|x|), exact to rounding and overflow-free.
                x.max(zero) + (-x.abs()).exp().ln_1p()
            }
            Func::Sign => {
                if x > zero {
                    one
                } else if x < zero {
                    -one
                } else {
                    zero
                }
            }
        }
    }
}

/// Comparison operators; they give 1.0 or 0.0 and have no derivative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl CmpOp {
    /// Name printed in the IR.
    pub fn name(self) -> &'static str {
        match self {
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
        }
    }

    /// 1.0 if the comparison holds, else 0.0.
    pub fn apply<R: Float>(self, a: R, b: R) -> R {
        let holds = match self {
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        };
        if holds {
            R::one()
        } else {
            R::zero()
        }
    }
}

/// One scalar IR node. Children are earlier nodes of the same pool.
///
/// Canonical forms kept by the pool's constructors: `Add` and `Mul` have at least two children,
/// at most one constant which comes first, and the other children strictly increasing by id;
/// no `Add` has an `Add` child, and a `Mul` child of a `Mul` has no constant factor (products
/// are not flattened, so that shared sub-products stay shared); subtraction is `a + (-1)·b`
/// and negation `(-1)·a`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// A constant, stored by its bits so that hashing and equality are total.
    Const(u64),
    /// An outside value.
    Var(Var),
    /// n-ary sum.
    Add(Box<[ExprId]>),
    /// n-ary product.
    Mul(Box<[ExprId]>),
    /// Quotient.
    Div(ExprId, ExprId),
    /// Power `base ^ exponent`.
    Pow(ExprId, ExprId),
    /// Elementwise function.
    Func(Func, ExprId),
    /// Smaller of two.
    Min(ExprId, ExprId),
    /// Larger of two.
    Max(ExprId, ExprId),
    /// Comparison giving 1.0 or 0.0.
    Cmp(CmpOp, ExprId, ExprId),
}

/// `base ^ exponent`: the one definition of power shared by constant folding, the interpreter
/// and compiled kernels. A square is `x·x` (exact to rounding, and what `x*x` in a model means);
/// everything else is `powf`, so a negative base with a non-integer exponent gives NaN.
pub fn apply_pow<R: Float>(base: R, exponent: R) -> R {
    if exponent == R::one() + R::one() {
        base * base
    } else {
        base.powf(exponent)
    }
}

impl Node {
    /// The node kind as printed in the IR: `const`, `var`, `add`, `mul`, `div`, `pow`, `min`,
    /// `max`, a function's name (`tanh`) or a comparison's name (`lt`).
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Const(_) => "const",
            Node::Var(_) => "var",
            Node::Add(_) => "add",
            Node::Mul(_) => "mul",
            Node::Div(..) => "div",
            Node::Pow(..) => "pow",
            Node::Func(f, _) => f.name(),
            Node::Min(..) => "min",
            Node::Max(..) => "max",
            Node::Cmp(op, ..) => op.name(),
        }
    }

    /// Number of children.
    pub fn operand_count(&self) -> usize {
        match self {
            Node::Const(_) | Node::Var(_) => 0,
            Node::Add(c) | Node::Mul(c) => c.len(),
            Node::Func(..) => 1,
            Node::Div(..) | Node::Pow(..) | Node::Min(..) | Node::Max(..) | Node::Cmp(..) => 2,
        }
    }

    /// Child number `i` (`i < operand_count()`).
    pub fn operand(&self, i: usize) -> ExprId {
        match self {
            Node::Const(_) | Node::Var(_) => panic!("leaf node has no operand {i}"),
            Node::Add(c) | Node::Mul(c) => c[i],
            Node::Func(_, a) => *a,
            Node::Div(a, b)
            | Node::Pow(a, b)
            | Node::Min(a, b)
            | Node::Max(a, b)
            | Node::Cmp(_, a, b) => {
                if i == 0 {
                    *a
                } else {
                    *b
                }
            }
        }
    }

    /// Calls `f` on each child in order, without allocating.
    pub fn for_each_operand(&self, mut f: impl FnMut(ExprId)) {
        match self {
            Node::Const(_) | Node::Var(_) => {}
            Node::Add(c) | Node::Mul(c) => c.iter().for_each(|&x| f(x)),
            Node::Func(_, a) => f(*a),
            Node::Div(a, b)
            | Node::Pow(a, b)
            | Node::Min(a, b)
            | Node::Max(a, b)
            | Node::Cmp(_, a, b) => {
                f(*a);
                f(*b);
            }
        }
    }

    /// The same node with every child replaced by `f(child)`.
    pub fn map_operands(&self, mut f: impl FnMut(ExprId) -> ExprId) -> Node {
        match self {
            Node::Const(_) | Node::Var(_) => self.clone(),
            Node::Add(c) => Node::Add(c.iter().map(|&x| f(x)).collect()),
            Node::Mul(c) => Node::Mul(c.iter().map(|&x| f(x)).collect()),
            Node::Func(func, a) => Node::Func(*func, f(*a)),
            Node::Div(a, b) => Node::Div(f(*a), f(*b)),
            Node::Pow(a, b) => Node::Pow(f(*a), f(*b)),
            Node::Min(a, b) => Node::Min(f(*a), f(*b)),
            Node::Max(a, b) => Node::Max(f(*a), f(*b)),
            Node::Cmp(op, a, b) => Node::Cmp(*op, f(*a), f(*b)),
        }
    }

    /// The node's children in order, as an owned small vector (works for every variant).
    pub fn operands(&self) -> Vec<ExprId> {
        match self {
            Node::Const(_) | Node::Var(_) => Vec::new(),
            Node::Add(c) | Node::Mul(c) => c.to_vec(),
            Node::Func(_, a) => vec![*a],
            Node::Div(a, b)
            | Node::Pow(a, b)
            | Node::Min(a, b)
            | Node::Max(a, b)
            | Node::Cmp(_, a, b) => vec![*a, *b],
        }
    }
}
