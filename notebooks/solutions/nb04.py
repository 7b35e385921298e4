"""Notebook 04, exercise: FCN-8s's crop offsets for another first padding."""


def crop_offsets(first_padding):
    """{'score_pool4c': ..., 'score_pool3c': ..., 'score': ...} for the paper's FCN-8s
    with conv1_1 padded by ``first_padding`` instead of 100.

    Padding moves every blob's shift by the same amount, so the two blobs of each
    skip move together and their offsets stay 5 and 9. The final crop compares
    upscore8 (shift 31 - 100 + ... = 69 - p at jump 1) with the image (shift 0).
    """
    return {"score_pool4c": 5, "score_pool3c": 9, "score": first_padding - 69}
