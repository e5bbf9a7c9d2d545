"""Reading media: audio, images, PDFs, speech and OCR engines."""
