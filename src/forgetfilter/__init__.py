"""forgetfilter: remove unsafe examples from finetuning data by how fast a model forgets them.

Implements ForgetFilter (Zhao, Deng, Madras, Zou, Ren: "Learning and Forgetting Unsafe
Examples in Large Language Models", ICML 2024, arXiv 2312.12736).
"""

__version__ = "0.1.0"
