//! Text ↔ token ids, through HF `tokenizers`, plus streaming decode and chat templates.
//!
//! Two sources:
//!
//! - **GGUF metadata** ([`Tokenizer::from_gguf`]), for `tokenizer.ggml.model = gpt2` (byte-level
//!   BPE, e.g. SmolLM2). The pipeline is rebuilt exactly as the upstream `tokenizer.json`:
//!   BPE over `tokenizer.ggml.tokens` + `tokenizer.ggml.merges` (`"a b"` strings); pre-tokenizer
//!   `Sequence[Digits(individual_digits = true), ByteLevel(add_prefix_space = false)]`;
//!   ByteLevel decoder; ByteLevel post-processor (offsets untrimmed); control tokens
//!   (`token_type == 3`) as special added tokens, user-defined ones (`4`) as plain added tokens.
//!   *Why Digits first:* `pre = smollm` (like StarCoder) splits every digit on its own
//!   (llama.cpp's `\p{N}` rule) before the GPT-2 regex; without it `2024` would come out as one
//!   `\p{N}+` piece and merge into multi-digit tokens the model never saw in training.
//!   *Why ByteLevel without prefix space:* the model was trained on text as is; a leading space
//!   would change the first token of every prompt. *Why control tokens are special:* chat
//!   prompts contain `<|im_start|>` literally and it must map to id 1, not to BPE pieces of
//!   `<`, `|`, `im`, …; as special tokens they also drop out of `decode(.., skip_special)`.
//!   SentencePiece GGUFs (`tokenizer.ggml.model = llama`) are refused with a clear error.
//! - **`tokenizer.json`** ([`Tokenizer::from_json_bytes`]), e.g. MiniLM's WordPiece. Padding
//!   and truncation are switched off: MiniLM's file pads everything to 128 tokens, which the
//!   encoder would then attend over.
//!
//! The crate is built with `unstable_wasm` natively too (fancy-regex instead of onig), so the
//! browser and the CLI split text with the same regex engine.
//!
//! Streaming ([`TokenStreamDecoder`]): a byte-level token can end in the middle of a UTF-8
//! character (🙂 is four bytes, often two tokens). The decoder re-decodes a short window of ids
//! and emits only text that no longer ends in U+FFFD, so callers never see half a character.

use minijinja::value::Value;
use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, DecoderWrapper, PostProcessorWrapper, PreTokenizerWrapper};

use crate::formats::gguf::{GgufFile, MetadataValue};
use crate::WorkerError;

/// llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL` and `LLAMA_TOKEN_TYPE_USER_DEFINED`.
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// Used when a model ships no chat template (the SmolLM2 / Qwen convention).
const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One chat turn, as the host sends it (`{role: 'user', content: '…'}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A model's tokenizer and the special ids generation needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Prepended by [`Tokenizer::encode`] when `add_bos` and special tokens are requested.
    pub bos_id: Option<u32>,
    /// Ids that end generation: `eos_token_id`, plus `eot_token_id` / `eom_token_id` when the
    /// GGUF names them (llama.cpp stops on those too).
    pub eos_ids: Vec<u32>,
    /// GGUF `tokenizer.ggml.add_bos_token` (false for SmolLM2). Always false for
    /// tokenizer.json, whose post-processor adds its own specials.
    pub add_bos: bool,
    /// Jinja chat template (GGUF `tokenizer.chat_template`); ChatML when `None`.
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    // Summary only: the derived form would print the whole vocabulary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .field("chat_template", &self.chat_template.as_ref().map(|t| t.len()))
            .finish_non_exhaustive()
    }
}

fn tok_err(reason: impl Into<String>) -> WorkerError {
    WorkerError::Tokenizer { reason: reason.into() }
}

fn meta_err(key: &str, reason: impl Into<String>) -> WorkerError {
    WorkerError::Metadata { key: key.to_owned(), reason: reason.into() }
}

/// An optional integer key that must be a valid token id when present.
fn optional_id(file: &GgufFile, key: &str, vocab_len: usize) -> Result<Option<u32>, WorkerError> {
    let Some(value) = file.get(key) else { return Ok(None) };
    match value.as_u64().and_then(|v| u32::try_from(v).ok()) {
        Some(id) if (id as usize) < vocab_len => Ok(Some(id)),
        _ => Err(meta_err(key, format!("{value:?} is not a token id below the vocabulary size {vocab_len}"))),
    }
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF's `tokenizer.ggml.*` metadata (see the module header).
    pub fn from_gguf(file: &GgufFile) -> Result<Self, WorkerError> {
        let model = file.get("tokenizer.ggml.model").ok_or_else(|| {
            tok_err("the GGUF file has no tokenizer (metadata tokenizer.ggml.model is missing); re-convert it with llama.cpp's convert_hf_to_gguf.py, or load the model's tokenizer.json instead")
        })?;
        let model = model.as_str().ok_or_else(|| meta_err("tokenizer.ggml.model", "expected a string"))?;
        match model {
            "gpt2" => {}
            "llama" => return Err(tok_err("SentencePiece tokenizers (tokenizer.ggml.model = llama) are not supported yet; use a byte-level BPE model (tokenizer.ggml.model = gpt2) such as SmolLM2, or supply a tokenizer.json")),
            other => return Err(tok_err(format!("tokenizer.ggml.model = {other:?} is not supported; only gpt2 (byte-level BPE) is"))),
        }
        // Which pre-tokenizer regex the model was trained with; guessing wrong silently shifts
        // token boundaries, so unknown names are refused.
        let pre = file.get("tokenizer.ggml.pre").and_then(MetadataValue::as_str);
        let mut pre_tokenizers: Vec<PreTokenizerWrapper> = Vec::new();
        match pre {
            Some("smollm" | "starcoder") => pre_tokenizers.push(Digits::new(true).into()),
            Some("gpt-2") => {}
            other => return Err(tok_err(format!("pre-tokenizer tokenizer.ggml.pre = {} is not supported yet (supported: smollm, starcoder, gpt-2)", other.map_or("(missing)".to_owned(), |p| format!("{p:?}"))))),
        }
        pre_tokenizers.push(ByteLevel::new(false, true, true).into());

        let tokens = file.require_str_array("tokenizer.ggml.tokens")?;
        let merges = file
            .require_str_array("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())).ok_or_else(|| meta_err("tokenizer.ggml.merges", format!("merge {m:?} is not two tokens separated by a space"))))
            .collect::<Result<Vec<_>, _>>()?;
        let types = file
            .get("tokenizer.ggml.token_type")
            .and_then(MetadataValue::as_array)
            .ok_or_else(|| meta_err("tokenizer.ggml.token_type", "expected an array of integers (one per token)"))?;
        if types.len() != tokens.len() {
            return Err(meta_err("tokenizer.ggml.token_type", format!("has {} entries for {} tokens", types.len(), tokens.len())));
        }
        let id_count = u32::try_from(tokens.len()).map_err(|_| meta_err("tokenizer.ggml.tokens", "more than 2^32 tokens"))?;

        let vocab: Vocab = tokens.iter().zip(0..id_count).map(|(t, id)| ((*t).to_owned(), id)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| tok_err(format!("cannot build BPE from tokenizer.ggml.tokens/merges: {e}")))?;

        let mut added = Vec::new();
        for (token, ty) in tokens.iter().zip(types) {
            let ty = ty.as_u64().ok_or_else(|| meta_err("tokenizer.ggml.token_type", format!("{ty:?} is not an integer")))?;
            if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
                added.push(AddedToken::from(*token, ty == TOKEN_TYPE_CONTROL).normalized(false));
            }
        }

        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner
            .with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(pre_tokenizers))))
            .with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())))
            .with_post_processor(Some(PostProcessorWrapper::ByteLevel(ByteLevel::new(false, false, true))));
        // Already in the vocabulary, so they keep their ids; this only makes them match whole.
        inner.add_tokens(&added);

        let vocab_len = tokens.len();
        let mut eos_ids = Vec::new();
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let Some(id) = optional_id(file, key, vocab_len)? {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        let add_bos = match file.get("tokenizer.ggml.add_bos_token") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| meta_err("tokenizer.ggml.add_bos_token", "expected a bool"))?,
        };
        let chat_template = match file.get("tokenizer.chat_template") {
            None => None,
            Some(v) => Some(v.as_str().ok_or_else(|| meta_err("tokenizer.chat_template", "expected a string"))?.to_owned()),
        };
        Ok(Tokenizer { inner, bos_id: optional_id(file, "tokenizer.ggml.bos_token_id", vocab_len)?, eos_ids, add_bos, chat_template })
    }

    /// Loads an HF `tokenizer.json`, with padding and truncation off. Special ids are guessed
    /// from the well-known special tokens it declares (none for BERT, whose `[CLS]`/`[SEP]` the
    /// post-processor adds); a loader with a `config.json` can overwrite the public fields.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, WorkerError> {
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| tok_err(format!("tokenizer.json cannot be read: {e}")))?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| tok_err(format!("cannot disable truncation: {e}")))?;
        let special = |names: &[&str]| -> Vec<u32> {
            names.iter().filter_map(|n| inner.get_added_vocabulary().token_to_id(n, inner.get_model())).collect()
        };
        let bos_id = special(&["<|begin_of_text|>", "<s>", "<bos>"]).first().copied();
        let eos_ids = special(&["<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>"]);
        Ok(Tokenizer { inner, bos_id, eos_ids, add_bos: false, chat_template: None })
    }

    /// What a packed model stores besides `tokenizer.json`: special ids, the BOS policy and the
    /// chat template (`tokenizer_config.json` of the tokenizer component).
    pub fn packed_config(&self) -> serde_json::Value {
        serde_json::json!({ "bos_id": self.bos_id, "eos_ids": self.eos_ids, "add_bos": self.add_bos, "chat_template": self.chat_template })
    }

    /// The tokenizer of a packed model: `tokenizer.json` bytes plus [`Tokenizer::packed_config`].
    pub fn from_packed(tokenizer_json: &[u8], config_json: &[u8]) -> Result<Self, WorkerError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Config {
            bos_id: Option<u32>,
            eos_ids: Vec<u32>,
            add_bos: bool,
            chat_template: Option<String>,
        }
        let config: Config = serde_json::from_slice(config_json).map_err(|e| tok_err(format!("tokenizer_config.json of the packed model: {e}")))?;
        let mut tokenizer = Tokenizer::from_json_bytes(tokenizer_json)?;
        tokenizer.bos_id = config.bos_id;
        tokenizer.eos_ids = config.eos_ids;
        tokenizer.add_bos = config.add_bos;
        tokenizer.chat_template = config.chat_template;
        Ok(tokenizer)
    }

    /// Serialised `tokenizer.json` (what [`Tokenizer::from_packed`] reads back).
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, WorkerError> {
        self.inner.to_string(false).map(String::into_bytes).map_err(|e| tok_err(format!("cannot serialise the tokenizer: {e}")))
    }

    /// Ids of `text`. With `add_special_tokens`, the post-processor's specials (BERT's
    /// `[CLS]`/`[SEP]`) and the BOS (when `add_bos`, unless the text, e.g. a rendered chat
    /// template, already starts with it) are added. Special tokens written in the text
    /// (`<|im_start|>`) always map to their ids.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, WorkerError> {
        let encoding = self.inner.encode(text, add_special_tokens).map_err(|e| tok_err(format!("cannot encode text: {e}")))?;
        let ids = encoding.get_ids();
        match self.bos_id {
            Some(bos) if add_special_tokens && self.add_bos && ids.first() != Some(&bos) => Ok(std::iter::once(bos).chain(ids.iter().copied()).collect()),
            _ => Ok(ids.to_vec()),
        }
    }

    /// Text of `ids`; with `skip_special`, special tokens (`<|im_end|>`, `[CLS]`) are left out.
    /// Ids outside the vocabulary are skipped, as HF tokenizers does.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, WorkerError> {
        self.inner.decode(ids, skip_special).map_err(|e| tok_err(format!("cannot decode ids: {e}")))
    }

    /// Vocabulary size including added tokens (49152 for SmolLM2).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The wrapped HF tokenizer, for what this type does not expose.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn stream_decoder(&self, skip_special: bool) -> TokenStreamDecoder {
        TokenStreamDecoder::new(skip_special)
    }

    /// Renders `messages` with the model's chat template (ChatML when it has none), the way
    /// `transformers`' `apply_chat_template` does: Jinja with `trim_blocks`/`lstrip_blocks`,
    /// variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, and a
    /// `raise_exception(msg)` function. SmolLM2's template inserts its default system prompt
    /// when the first message is not a system message.
    pub fn render_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, WorkerError> {
        let template = self.chat_template.as_deref().unwrap_or(CHATML_TEMPLATE);
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| tok_err(format!("chat template syntax config: {e}")))?;
        env.set_syntax(syntax);
        env.add_function("raise_exception", |msg: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        let token_text = |id: Option<u32>| id.and_then(|id| self.inner.id_to_token(id)).unwrap_or_default();
        let messages: Value = messages
            .iter()
            .map(|m| Value::from_pairs([("role", Value::from(m.role.as_str())), ("content", Value::from(m.content.as_str()))]))
            .collect();
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => token_text(self.bos_id),
            eos_token => token_text(self.eos_ids.first().copied()),
        };
        env.render_str(template, ctx).map_err(|e| tok_err(format!("the chat template cannot be rendered: {e:#}")))
    }
}

/// Turns generated ids into text one id at a time, holding back incomplete UTF-8.
///
/// State: `context` are ids already emitted (kept so decoders that look at neighbours, like
/// WordPiece's `##` joining, see them), `context_text` their decoded text, `pending` ids not yet
/// emitted. Each push decodes `context + pending`; when that text grew and does not end in
/// U+FFFD, the growth is emitted and `pending` becomes the new context. The window stays a few
/// tokens long, so each step costs O(1).
#[derive(Debug, Clone, Default)]
pub struct TokenStreamDecoder {
    skip_special: bool,
    context: Vec<u32>,
    context_text: String,
    pending: Vec<u32>,
}

impl TokenStreamDecoder {
    pub fn new(skip_special: bool) -> Self {
        TokenStreamDecoder { skip_special, ..Default::default() }
    }

    /// Adds `id`; returns the text it completes (often empty while a character is split).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, WorkerError> {
        self.pending.push(id);
        let window: Vec<u32> = self.context.iter().chain(&self.pending).copied().collect();
        let text = tokenizer.decode(&window, self.skip_special)?;
        if text.ends_with('\u{FFFD}') || text.len() <= self.context_text.len() {
            return Ok(String::new());
        }
        let new = self.suffix(&text)?;
        self.context = std::mem::take(&mut self.pending);
        self.context_text = tokenizer.decode(&self.context, self.skip_special)?;
        Ok(new)
    }

    /// Flushes what is pending at the end of generation (an incomplete character becomes
    /// U+FFFD) and resets the decoder.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String, WorkerError> {
        if self.pending.is_empty() {
            *self = TokenStreamDecoder::new(self.skip_special);
            return Ok(String::new());
        }
        let window: Vec<u32> = self.context.iter().chain(&self.pending).copied().collect();
        let text = tokenizer.decode(&window, self.skip_special)?;
        let new = if text.len() > self.context_text.len() { self.suffix(&text)? } else { String::new() };
        *self = TokenStreamDecoder::new(self.skip_special);
        Ok(new)
    }

    fn suffix(&self, text: &str) -> Result<String, WorkerError> {
        match text.get(self.context_text.len()..) {
            Some(new) if text.starts_with(&self.context_text) => Ok(new.to_owned()),
            _ => Err(tok_err(format!("streaming decode: {text:?} does not extend the already emitted {:?}", self.context_text))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level BPE over the 256 byte symbols plus one merge ("a"+"b"), built directly.
    fn tiny() -> Tokenizer {
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": [{"id": 257, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "vocab": byte_vocab(), "merges": [["a", "b"]]},
            "padding": {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "!"},
        });
        Tokenizer::from_json_bytes(json.to_string().as_bytes()).unwrap()
    }

    fn byte_vocab() -> serde_json::Value {
        let mut vocab = serde_json::Map::new();
        // GPT-2's byte↦char table: printable Latin-1 maps to itself, the rest to U+0100…
        let mut n = 0;
        for b in 0u32..256 {
            let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            let c = if printable { char::from_u32(b) } else { n += 1; char::from_u32(255 + n) };
            vocab.insert(c.unwrap().to_string(), b.into());
        }
        vocab.insert("ab".into(), 256.into());
        vocab.insert("<|im_end|>".into(), 257.into());
        serde_json::Value::Object(vocab)
    }

    #[test]
    fn json_padding_is_off_and_specials_are_found() {
        let t = tiny();
        assert_eq!(t.encode("ab a", true).unwrap(), vec![256, 32, 97]);
        assert_eq!(t.eos_ids, vec![257]);
        assert_eq!(t.encode("a<|im_end|>", false).unwrap(), vec![97, 257]);
        assert_eq!(t.decode(&[97, 257], true).unwrap(), "a");
    }

    #[test]
    fn stream_decoder_holds_back_split_characters() {
        let t = tiny();
        let ids = t.encode("é🙂x", false).unwrap();
        assert_eq!(ids.len(), 2 + 4 + 1);
        let mut d = t.stream_decoder(false);
        let pieces: Vec<String> = ids.iter().map(|&id| d.push(&t, id).unwrap()).collect();
        assert_eq!(pieces, vec!["", "é", "", "", "", "🙂", "x"]);
        assert_eq!(d.finish(&t).unwrap(), "");
        d.push(&t, 0xF0).unwrap();
        assert_eq!(d.finish(&t).unwrap(), "\u{FFFD}");
    }

    fn tiny_gguf(model: &str) -> Vec<u8> {
        let mut types = 5u32.to_le_bytes().to_vec(); // array of i32
        types.extend(4u64.to_le_bytes());
        for ty in [1i32, 1, 1, 3] {
            types.extend(ty.to_le_bytes());
        }
        crate::formats::gguf::tests::GgufBuilder::default()
            .kv_str("tokenizer.ggml.model", model)
            .kv_str("tokenizer.ggml.pre", "gpt-2")
            .kv_str_array("tokenizer.ggml.tokens", &["a", "b", "ab", "<|im_end|>"])
            .kv_str_array("tokenizer.ggml.merges", &["a b"])
            .kv_raw("tokenizer.ggml.token_type", 9, types)
            .kv_u32("tokenizer.ggml.eos_token_id", 3)
            .build()
    }

    #[test]
    fn gguf_bpe_merges_and_control_tokens() {
        let bytes = tiny_gguf("gpt2");
        let t = Tokenizer::from_gguf(&GgufFile::parse(&bytes, "t").unwrap()).unwrap();
        assert_eq!((t.eos_ids.as_slice(), t.bos_id, t.add_bos), (&[3u32][..], None, false));
        assert_eq!(t.encode("aab<|im_end|>", true).unwrap(), vec![0, 2, 3]);
        assert_eq!(t.decode(&[0, 2, 3], true).unwrap(), "aab");
        let spm = tiny_gguf("llama");
        let err = Tokenizer::from_gguf(&GgufFile::parse(&spm, "t").unwrap()).unwrap_err();
        assert!(err.name() == "TokenizerError" && err.to_string().contains("SentencePiece"), "{err}");
    }

    #[test]
    fn chatml_is_the_fallback_template() {
        let t = tiny();
        let out = t.render_chat(&[ChatMessage::new("user", "hi")], true).unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }
}
