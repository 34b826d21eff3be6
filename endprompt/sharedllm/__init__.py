"""SharedLLM (arXiv 2603.04759, "Stacked from One: Multi-Scale Self-Injection for Context Window Extension") on a
stock transformers Llama: the context tree (`tree`), the cross-attention injected into the first M layers
(`injection`), the stacked model with greedy generation (`model`) and its save/load functions (`checkpoint`)."""

from endprompt.sharedllm.checkpoint import is_sharedllm_dir, load_sharedllm, save_sharedllm
from endprompt.sharedllm.injection import CrossAttention, InjectedContext
from endprompt.sharedllm.model import SharedLLM, SharedLLMConfig
from endprompt.sharedllm.tree import Node, TreeSpec, compress_layout, keep_indices, select_nodes, split_tree

__all__ = ["SharedLLM", "SharedLLMConfig", "TreeSpec", "Node", "split_tree", "select_nodes", "keep_indices",
           "compress_layout", "CrossAttention", "InjectedContext", "save_sharedllm", "load_sharedllm",
           "is_sharedllm_dir"]
