//! Chat prompts: the model's own Jinja `chat_template` rendered as
//! transformers' `apply_chat_template` renders it (trim_blocks, lstrip_blocks,
//! loop controls, Python string methods), or a built-in Phi-3 format for
//! models that ship no template.

use minijinja::{Environment, ErrorKind as JinjaErrorKind};
use serde::Serialize;
use std::error::Error as _;

use crate::error::{Result, TokenizerError};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// llama.cpp's phi3 format (PHI3_FAMILY.md §8.1), with system messages kept:
/// `<|role|>\n{content}<|end|>\n` per message, then `<|assistant|>\n`.
pub const BUILTIN_PHI3_TEMPLATE: &str = "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

#[derive(Serialize)]
struct Context<'a> {
    messages: &'a [Message],
    add_generation_prompt: bool,
    bos_token: &'a str,
    eos_token: &'a str,
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported with its line.
    pub fn new(source: &str) -> Result<ChatTemplate> {
        let mut env = Environment::new();
        // the settings transformers uses for chat templates
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(JinjaErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| template_error(&e))?;
        Ok(ChatTemplate { env })
    }

    /// The built-in Phi-3 format.
    pub fn builtin_phi3() -> ChatTemplate {
        ChatTemplate::new(BUILTIN_PHI3_TEMPLATE).expect("the built-in template compiles")
    }

    /// Renders `messages`, adding the assistant prompt when asked.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(|e| template_error(&e))?;
        tmpl.render(Context {
            messages,
            add_generation_prompt,
            bos_token,
            eos_token,
        })
        .map_err(|e| template_error(&e))
    }
}

fn template_error(e: &minijinja::Error) -> TokenizerError {
    let mut why = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        why.push_str(&format!(": {s}"));
        src = s.source();
    }
    TokenizerError::Template { line: e.line(), why }
}
