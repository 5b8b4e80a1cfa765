"""MFAS: multimodal fusion architecture search on frozen unimodal backbones."""
