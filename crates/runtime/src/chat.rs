//! A chat: messages rendered with the model's template, each turn feeding
//! only the tokens the session does not hold yet.

use phi3_model::Session;
use phi3_tokenizer::{ChatTemplate, EncodeOptions, Message, Tokenizer};

use crate::generate::{generate, GenerateError, GenerateOptions, Generation};
use crate::sampler::Sampler;

pub struct Chat<'m> {
    pub session: Session<'m>,
    pub tokenizer: &'m Tokenizer,
    template: ChatTemplate,
    pub system: Option<String>,
    pub messages: Vec<Message>,
    /// Tokens fed in the last turn (for reporting KV-cache reuse).
    pub last_fed: usize,
}

impl<'m> Chat<'m> {
    pub fn new(session: Session<'m>, tokenizer: &'m Tokenizer, template: ChatTemplate) -> Self {
        Chat {
            session,
            tokenizer,
            template,
            system: None,
            messages: Vec::new(),
            last_fed: 0,
        }
    }

    /// Forgets the conversation (the system message stays).
    pub fn reset(&mut self) {
        self.messages.clear();
        self.session.reset();
    }

    fn render(&self) -> Result<Vec<u32>, GenerateError> {
        let mut all = Vec::new();
        if let Some(s) = &self.system {
            all.push(Message::new("system", s.clone()));
        }
        all.extend(self.messages.iter().cloned());
        render_prompt(self.tokenizer, &self.template, &all)
    }

    /// Adds a user message and generates the reply, feeding only the part of
    /// the rendered conversation the session does not already hold.
    pub fn reply(
        &mut self,
        user: &str,
        sampler: &mut Sampler,
        opts: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation, GenerateError> {
        self.messages.push(Message::new("user", user));
        let tokens = self.render()?;
        let held = self.session.tokens();
        let common = held.iter().zip(&tokens).take_while(|(a, b)| a == b).count();
        if common < held.len() {
            // the conversation changed under the cache (a re-tokenized reply,
            // /system, /load): keep the common prefix only
            self.session.truncate(common);
        }
        let start = self.session.tokens().len();
        let delta = tokens[start..].to_vec();
        self.last_fed = delta.len();
        let result = generate(&mut self.session, self.tokenizer, sampler, &delta, opts, on_text);
        match result {
            Ok(g) => {
                self.messages.push(Message::new("assistant", g.text.clone()));
                Ok(g)
            }
            Err(e) => {
                self.messages.pop();
                Err(e)
            }
        }
    }
}

/// The token ids of `messages` rendered with `template`, ending with the
/// generation prompt (the assistant's turn starts next).
pub fn render_prompt(
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
) -> Result<Vec<u32>, GenerateError> {
    let v = &tokenizer.vocab;
    let piece = |id: Option<u32>| id.map(|i| v.pieces[i as usize].clone()).unwrap_or_default();
    let text = template.render(messages, true, &piece(v.bos), &piece(v.eos))?;
    Ok(tokenizer.encode(
        &text,
        EncodeOptions {
            add_special: false,
            parse_special: true,
        },
    ))
}
