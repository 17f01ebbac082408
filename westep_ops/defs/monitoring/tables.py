"""Tables as the UI shows them (Markdown metadata)."""

import pandas as pd


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a Markdown table whose missing values (NaN, NaT, None) are empty cells."""
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, missingval="")
