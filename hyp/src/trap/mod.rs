//! What a trap from the host means: syndrome decoding, PSCI/SMCCC calls, abort injection.
