"""The method: folds, region CNNs and their embeddings, the LSTM fusion head, final models, predict.

``protocols`` makes the folds, ``models`` and ``engine`` build and train the networks,
``embed`` writes the CNN embeddings of a run, ``head`` fits the LSTM fusion head per fold,
``final`` fits the models ``predict`` uses on new clips.
"""
