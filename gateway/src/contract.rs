//! The embedded agora contract: the descriptor pool decoded from
//! `agora_proto::FILE_DESCRIPTOR_SET`, plus the options the gateway reads
//! (`google.api.http`, `agora.options.v1.http_success_code` and
//! `agora.options.v1.sign_in_budget`) and the proto comments that become API docs. Decoded once per process; everything else is
//! derived from it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use prost_reflect::{DescriptorPool, ExtensionDescriptor, MethodDescriptor, ServiceDescriptor};

/// Full name of the HTTP rule extension.
pub const HTTP_RULE_EXTENSION: &str = "google.api.http";
/// Full name of agora's success-status extension.
pub const SUCCESS_CODE_EXTENSION: &str = "agora.options.v1.http_success_code";
/// Full name of agora's sign-in-budget service option.
pub const SIGN_IN_BUDGET_EXTENSION: &str = "agora.options.v1.sign_in_budget";

/// The contract as the gateway uses it. Cheap to clone.
#[derive(Clone)]
pub struct Contract {
    /// Every message, enum and service of agora and its imports.
    pub pool: DescriptorPool,
    /// `google.api.http`.
    pub http_rule: ExtensionDescriptor,
    /// `agora.options.v1.http_success_code`; absent when a test pool lacks it.
    pub success_code: Option<ExtensionDescriptor>,
    /// `agora.options.v1.sign_in_budget`; absent when a test pool lacks it.
    pub sign_in_budget: Option<ExtensionDescriptor>,
    comments: Arc<HashMap<(String, Vec<i32>), String>>,
}

impl Contract {
    /// The agora contract, decoded on first use.
    pub fn agora() -> anyhow::Result<Self> {
        static AGORA: OnceLock<Result<Contract, String>> = OnceLock::new();
        AGORA
            .get_or_init(|| {
                Self::from_bytes(agora_proto::FILE_DESCRIPTOR_SET).map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(anyhow::Error::msg)
    }

    /// Decodes an encoded `FileDescriptorSet` (tests use this with their own protos).
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        let pool = DescriptorPool::decode(bytes).context("decoding the descriptor set")?;
        let http_rule = pool
            .get_extension_by_name(HTTP_RULE_EXTENSION)
            .with_context(|| format!("the descriptor set lacks {HTTP_RULE_EXTENSION}"))?;
        let success_code = pool.get_extension_by_name(SUCCESS_CODE_EXTENSION);
        let sign_in_budget = pool.get_extension_by_name(SIGN_IN_BUDGET_EXTENSION);
        let mut comments = HashMap::new();
        for file in pool.files() {
            let Some(info) = &file.file_descriptor_proto().source_code_info else {
                continue;
            };
            for location in &info.location {
                if let Some(text) = location.leading_comments.as_deref().map(clean_comment)
                    && !text.is_empty()
                {
                    comments.insert((file.name().to_owned(), location.path.clone()), text);
                }
            }
        }
        Ok(Contract {
            pool,
            http_rule,
            success_code,
            sign_in_budget,
            comments: Arc::new(comments),
        })
    }

    /// Whether calls to `service` draw on the sign-in budget.
    pub fn draws_sign_in_budget(&self, service: &ServiceDescriptor) -> bool {
        self.sign_in_budget.as_ref().is_some_and(|ext| {
            let options = service.options();
            options.has_extension(ext) && options.get_extension(ext).as_bool() == Some(true)
        })
    }

    /// The leading comment of the element at `path` in `file`, trimmed.
    pub fn comment(&self, file: &str, path: &[i32]) -> Option<&str> {
        self.comments
            .get(&(file.to_owned(), path.to_vec()))
            .map(String::as_str)
    }

    /// The leading comment of a method.
    pub fn method_comment(&self, method: &MethodDescriptor) -> Option<&str> {
        self.comment(method.parent_file().name(), method.path())
    }
}

/// Joins comment lines, dropping the single leading space protoc style leaves.
fn clean_comment(raw: &str) -> String {
    raw.lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agora_contract_loads_with_its_options_and_comments() {
        let contract = Contract::agora().unwrap();
        assert!(contract.success_code.is_some());
        let service = contract
            .pool
            .get_service_by_name("agora.user.v1.UserService")
            .unwrap();
        let method = service
            .methods()
            .find(|m| m.name() == "GetProfile")
            .unwrap();
        let comment = contract.method_comment(&method).unwrap();
        assert!(
            comment.starts_with("Returns a user's public profile."),
            "{comment}"
        );
    }
}
