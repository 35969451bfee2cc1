"""Who made KaoKore, under which terms, and how to cite it: one place for the card and Croissant."""
from __future__ import annotations

PRETTY_NAME = "KaoKore: faces in pre-modern Japanese art"
DESCRIPTION = ("Faces cropped from pre-modern Japanese paintings and illustrated books (picture scrolls "
               "and Nara ehon), labelled with gender and social status, collected by the ROIS-DS Center "
               "for Open Data in the Humanities (CODH).")
DOI = "10.20676/00000353"
DOI_URL = f"https://doi.org/{DOI}"
HOMEPAGE = "http://codh.rois.ac.jp/face/dataset/"
REPOSITORY = "https://github.com/rois-codh/kaokore"
LICENSE_ID = "cc-by-sa-4.0"
LICENSE_NAME = "Creative Commons Attribution-ShareAlike 4.0 International (CC BY-SA 4.0)"
LICENSE_URL = "https://creativecommons.org/licenses/by-sa/4.0/"
ATTRIBUTION = f'"KaoKore Dataset" (collected by CODH from multiple organizations), doi:{DOI}'
ARXIV = "2002.08595"
PAPER_URL = f"https://arxiv.org/abs/{ARXIV}"
AUTHORS = ("Yingtao Tian", "Chikahiko Suzuki", "Tarin Clanuwat", "Mikel Bober-Irizar", "Alex Lamb",
           "Asanobu Kitamoto")
PAPER_TITLE = "KaoKore: A Pre-modern Japanese Art Facial Expression Dataset"
VENUE = "International Conference on Computational Creativity (ICCC)"
YEAR = 2020

BIBTEX = f"""@inproceedings{{tian2020kaokore,
  title     = {{{PAPER_TITLE}}},
  author    = {{{' and '.join(AUTHORS)}}},
  booktitle = {{{VENUE}}},
  year      = {{{YEAR}}},
  eprint    = {{{ARXIV}}},
  archivePrefix = {{arXiv}},
  url       = {{{PAPER_URL}}}
}}"""

# (collection, organisation, URL): the content providers CONTENT_PROVIDERS.txt lists, whose
# naming the dataset's terms require alongside anything derived from it.
CONTENT_PROVIDERS = (
    ("Dataset of Pre-Modern Japanese Text",
     "National Institute of Japanese Literature and ROIS-DS Center for Open Data in the Humanities",
     "http://codh.rois.ac.jp/pmjt/"),
    ("Digital Collection of Keio University Libraries", "Keio University Media Center",
     "https://dcollections.lib.keio.ac.jp/"),
    ("Kyoto University Rare Materials Digital Archive", "Kyoto University Library Network",
     "https://rmda.kulib.kyoto-u.ac.jp/"),
)
