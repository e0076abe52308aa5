"""Text for training: corpora, the WordPiece tokenizer, and the Transformer text encoder."""
