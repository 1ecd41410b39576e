"""Text helpers for one-line messages (torch-free, so every module may use them)."""


def short_text(text: str, limit: int = 160) -> str:
    """``text`` on one line, at most ``limit`` characters, cut at a word boundary with '...'."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit - 3]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:.") + "..."
