"""The quick-start demo: a synthetic reasoning task, a scripted teacher, a tiny student."""
