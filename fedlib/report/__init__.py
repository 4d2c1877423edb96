"""What a reproduction reports: the paper's figures and tables, read from finished runs.

- ``describe``: the line that says what a figure or table stands on (data, profile, size, seeds).
- ``selection``: which runs and images a report shows, and which expected runs are missing.
- ``style``: the one look of the figures and the helpers that build them.
- ``tables``: Tables 2-4, the FedAvg-pooled gap, per-label accuracy, class and client counts.
- ``figures``: Figures 1, 3, 4 and 5, client distribution, sample images, confusion, one run's history.
- ``gradcam``: Grad-CAM++ maps and the paper's Figures 6-8.
- ``localisation``: how well the maps fall on the lesion, and its table.
- ``non_iid``: the non-IID hospitals study's table, reading and figures.
- ``io``: the one writer (``save_figure``, ``save_table``): every other module returns figures
  and tables and writes nothing.

Figures are built on ``matplotlib.figure.Figure`` rather than pyplot, so nothing is shown or kept
alive behind the caller's back; a notebook displays the returned figure.
"""
