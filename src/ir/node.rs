//! IR node types: scalar expression nodes referring to earlier nodes by [`ExprId`].

use std::fmt;

/// Index of a node in a [`super::Pool`]; children always have smaller ids than their parents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExprId(pub u32);

impl ExprId {
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

    /// Evaluates the function; the one definition shared by constant folding and the interpreter.
    pub fn apply(self, x: f64) -> f64 {
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
                if x >= 0.0 {
                    1.0 / (1.0 + (-x).exp())
                } else {
                    let e = x.exp();
                    e / (1.0 + e)
                }
            }
            Func::Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            Func::Softplus => {
                // log(1 + e^x) = max(x, 0) + log1p(e^-|x|), exact to rounding and overflow-free.
                x.max(0.0) + (-x.abs()).exp().ln_1p()
            }
            Func::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
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
    pub fn apply(self, a: f64, b: f64) -> f64 {
        let holds = match self {
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        };
        if holds {
            1.0
        } else {
            0.0
        }
    }
}

/// One scalar IR node. Children are earlier nodes of the same pool.
///
/// Canonical forms kept by the pool's constructors: `Add` and `Mul` have at least two children,
/// at most one constant which comes first, and the other children sorted by id; subtraction is
/// `a + (-1)·b` and negation `(-1)·a`.
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

impl Node {
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
