"""best_artworks: the Kaggle "Best Artworks of All Time" download, or any folder of paintings sorted by artist."""
