//! Readers for the model files users have: GGUF (llama.cpp ecosystem) and, with the BERT and
//! HF-Llama loaders, safetensors + `config.json`. Readers parse and bounds-check; they never
//! interpret a tensor's numbers (that is [`crate::quant`]'s job).

pub mod gguf;
pub mod hf_config;
pub mod safetensors;
