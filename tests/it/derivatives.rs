//! Symbolic derivatives of every model: against central finite differences of the interpreted
//! IR, and JVP against VJP by the dot-product test.
