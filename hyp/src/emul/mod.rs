//! The emulated SMMUv3 the host kernel drives: its register file, command queue, stream table and
//! event queue, turned into physical SMMU configuration whose stage 2 is always Portcullis' policy.
